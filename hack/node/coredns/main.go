// Command coredns is CoreDNS v1.15 with only the plugins the test cluster's DNS needs: the
// kubernetes plugin serving cluster.local from the real API server, bound to the node address.
// A full CoreDNS links every cloud DNS provider; this one builds in a fraction of the time.
// Built by hack/build-node.sh; started by tests/harness/cluster.py.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// The plugins compiled in; each registers itself with CoreDNS on import.
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// directives is the order in which plugins see a query (CoreDNS's plugin.cfg order, filtered).
var directives = []string{"bind", "ready", "health", "errors", "log", "cache", "kubernetes"}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
