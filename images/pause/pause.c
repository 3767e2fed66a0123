/* Pod sandbox PID 1 for the test node's containerd (hack/build-images.sh): sleeps until SIGINT or
 * SIGTERM, then exits 0; reaps orphans. Built with `gcc -static` into a one-file image. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
  struct sigaction stop_act = {.sa_handler = stop}, reap_act = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGINT, &stop_act, 0) || sigaction(SIGTERM, &stop_act, 0) || sigaction(SIGCHLD, &reap_act, 0)) return 1;
  for (;;) pause();
}
