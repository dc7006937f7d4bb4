/* The real node's stand-in images (tests/e2e/images/build): one static program, several
 * commands, chosen by the name it is called by (argv[0]'s last component).
 *
 *   pause      the Pod sandbox: waits for SIGTERM, reaping children (containerd's sandbox_image)
 *   collector  the metrics collector's stand-in, under the name the default template uses:
 *              reports what a real collector needs (token set, never its value; cgroup files
 *              read through its mount; whether /var/run/docker.sock is a socket; POD_NAME and
 *              POD_NAMESPACE) on its log and in /dev/termination-log, then stays up until
 *              SIGTERM, as a sidecar does
 *   app        an application: reports whether the agent its JAVA_TOOL_OPTIONS names
 *              (-javaagent:PATH) is there, then runs until SIGTERM, or exits 0 after
 *              APP_SECONDS seconds when that is set (a Job's container)
 *   cp         `cp -r SRC/. DST/`, all the APM template's init container asks of it
 *
 * Every report line starts with the command's name and a colon; the tests read them with
 * `kubectl logs`.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static void wait_for_term(const char *who) {
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  while (!stop) {
    pause();
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
  }
  if (who) {
    printf("%s: SIGTERM, stopping\n", who);
    fflush(stdout);
  }
}

/* The report goes to stdout and, when the kubelet gave one, to the termination log. */
static FILE *term_log;
static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  fflush(stdout);
  if (term_log) {
    va_start(ap, fmt);
    vfprintf(term_log, fmt, ap);
    va_end(ap);
    fflush(term_log);
  }
}

/* Reads a file's first line; 1 when it could be read. */
static int read_first_line(const char *path, char *buf, size_t len) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  int ok = fgets(buf, (int)len, f) != NULL;
  fclose(f);
  if (ok) buf[strcspn(buf, "\n")] = 0;
  return ok;
}

static int collector(void) {
  term_log = fopen("/dev/termination-log", "w");
  const char *token = getenv("BITBUCKET_API_TOKEN");
  if (token && *token)
    report("collector: token set (%zu bytes)\n", strlen(token));
  else
    report("collector: token missing\n");
  /* The files a collector reads, cgroup v1 (one hierarchy per controller) then v2. */
  static const char *files[] = {
      "memory/memory.usage_in_bytes", "cpuacct/cpuacct.usage", "pids/pids.current",
      "memory.current", "cpu.stat", NULL};
  char found[512] = "", line[256], path[256];
  int n = 0;
  for (int i = 0; files[i]; i++) {
    snprintf(path, sizeof path, "/sys/fs/cgroup/%s", files[i]);
    if (read_first_line(path, line, sizeof line)) {
      n++;
      strncat(found, " ", sizeof found - strlen(found) - 1);
      strncat(found, files[i], sizeof found - strlen(found) - 1);
    }
  }
  DIR *d = opendir("/sys/fs/cgroup");
  if (!d)
    report("collector: cgroup unreadable (%s)\n", strerror(errno));
  else {
    closedir(d);
    report("collector: cgroup files read: %d%s\n", n, found);
  }
  struct stat st;
  if (stat("/var/run/docker.sock", &st) != 0)
    report("collector: docker.sock absent\n");
  else if (S_ISSOCK(st.st_mode))
    report("collector: docker.sock is a socket\n");
  else
    report("collector: docker.sock is not a socket\n");
  const char *name = getenv("POD_NAME"), *ns = getenv("POD_NAMESPACE");
  report("collector: pod %s/%s\n", ns ? ns : "(unset)", name ? name : "(unset)");
  if (term_log) fclose(term_log);
  term_log = NULL;
  wait_for_term("collector");
  return 0;
}

static int app(void) {
  const char *opts = getenv("JAVA_TOOL_OPTIONS");
  const char *agent = opts ? strstr(opts, "-javaagent:") : NULL;
  if (agent) {
    char path[256];
    snprintf(path, sizeof path, "%s", agent + strlen("-javaagent:"));
    path[strcspn(path, " ")] = 0;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
      printf("app: agent %s found (%lld bytes)\n", path, (long long)st.st_size);
    else
      printf("app: agent %s missing (%s)\n", path, strerror(errno));
  } else {
    printf("app: no agent\n");
  }
  printf("app: running\n");
  fflush(stdout);
  const char *seconds = getenv("APP_SECONDS");
  if (seconds) {
    sleep((unsigned)atoi(seconds));
    printf("app: done\n");
    return 0;
  }
  wait_for_term("app");
  return 0;
}

/* Copies the tree under src into dst (which exists). */
static int copy_tree(const char *src, const char *dst) {
  DIR *d = opendir(src);
  if (!d) {
    fprintf(stderr, "cp: %s: %s\n", src, strerror(errno));
    return 1;
  }
  struct dirent *e;
  int rc = 0;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char from[512], to[512];
    snprintf(from, sizeof from, "%s/%s", src, e->d_name);
    snprintf(to, sizeof to, "%s/%s", dst, e->d_name);
    struct stat st;
    if (stat(from, &st) != 0) { rc = 1; continue; }
    if (S_ISDIR(st.st_mode)) {
      if (mkdir(to, st.st_mode & 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "cp: %s: %s\n", to, strerror(errno));
        rc = 1;
        continue;
      }
      rc |= copy_tree(from, to);
      continue;
    }
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, st.st_mode & 0777);
    if (in < 0 || out < 0) {
      fprintf(stderr, "cp: %s -> %s: %s\n", from, to, strerror(errno));
      rc = 1;
    } else {
      char buf[65536];
      ssize_t r;
      while ((r = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, (size_t)r) != r) { rc = 1; break; }
    }
    if (in >= 0) close(in);
    if (out >= 0) close(out);
  }
  closedir(d);
  return rc;
}

static int cp(int argc, char **argv) {
  /* cp -r SRC/. DST/ */
  if (argc != 4 || strcmp(argv[1], "-r") != 0) {
    fprintf(stderr, "usage: cp -r SRC/. DST/\n");
    return 2;
  }
  char src[256];
  snprintf(src, sizeof src, "%s", argv[2]);
  size_t n = strlen(src);
  if (n >= 2 && !strcmp(src + n - 2, "/.")) src[n - 2] = 0;
  int rc = copy_tree(src, argv[3]);
  printf("cp: %s -> %s: %s\n", argv[2], argv[3], rc ? "failed" : "done");
  return rc;
}

int main(int argc, char **argv) {
  const char *name = strrchr(argv[0], '/');
  name = name ? name + 1 : argv[0];
  if (!strcmp(name, "pause")) {
    wait_for_term(NULL);
    return 0;
  }
  if (!strcmp(name, "collector")) return collector();
  if (!strcmp(name, "app")) return app();
  if (!strcmp(name, "cp")) return cp(argc, argv);
  fprintf(stderr, "standin: unknown command %s (pause, collector, app, cp)\n", name);
  return 2;
}
