/*
 * moonforge.host: what the Lua library needs from the operating system and
 * plain Lua lacks — clocks, terminals, directories, atomic file writes,
 * process facts and the interrupt flag. Failures return nil plus a message.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "git_commit.h" /* generated at build time: MF_GIT_COMMIT */
#include "host.h"

static volatile sig_atomic_t interrupt_signal;

void mf_host_note_interrupt(int sig) { interrupt_signal = sig; }

static int fail(lua_State *L, const char *what, const char *path) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s %s: %s", what, path, strerror(errno));
  return 2;
}

static int l_interrupted(lua_State *L) {
  if (!interrupt_signal) return 0;
  lua_pushstring(L, interrupt_signal == SIGTERM ? "SIGTERM" : "SIGINT");
  return 1;
}

static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

static int l_term_width(lua_State *L) {
  struct winsize ws;
  int fd = (int)luaL_optinteger(L, 1, 2);
  lua_pushinteger(L, ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 80);
  return 1;
}

static int l_clock(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + ts.tv_nsec * 1e-9);
  return 1;
}

static int l_time(lua_State *L) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  lua_pushnumber(L, (double)tv.tv_sec + tv.tv_usec * 1e-6);
  return 1;
}

static int l_getpid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

static int l_pid_alive(lua_State *L) {
  pid_t pid = (pid_t)luaL_checkinteger(L, 1);
  lua_pushboolean(L, pid > 0 && (kill(pid, 0) == 0 || errno == EPERM));
  return 1;
}

static int l_mkdir_p(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char buf[PATH_MAX];
  if (strlen(path) >= sizeof buf) return luaL_error(L, "path too long: %s", path);
  strcpy(buf, path);
  for (char *p = buf + 1; ; p++) {
    if (*p == '/' || *p == 0) {
      char c = *p;
      *p = 0;
      if (mkdir(buf, 0777) != 0 && errno != EEXIST) return fail(L, "cannot create", buf);
      *p = c;
      if (!c) break;
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* Write to a temporary name in the same folder, flush to disk, rename: a
 * reader sees the old file or the new one, never a part. */
static int l_write_atomic(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t n;
  const char *data = luaL_checklstring(L, 2, &n);
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) return fail(L, "cannot write", tmp);
  size_t done = 0;
  while (done < n) {
    ssize_t w = write(fd, data + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      int e = errno;
      close(fd);
      unlink(tmp);
      errno = e;
      return fail(L, "cannot write", tmp);
    }
    done += (size_t)w;
  }
  if (fsync(fd) != 0 || close(fd) != 0) return fail(L, "cannot flush", tmp);
  if (rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    errno = e;
    return fail(L, "cannot rename into", path);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* Append one line and flush it to disk (metrics logs survive a kill). */
static int l_append_line(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t n;
  const char *line = luaL_checklstring(L, 2, &n);
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (fd < 0) return fail(L, "cannot append to", path);
  char *buf = malloc(n + 1);
  if (!buf) {
    close(fd);
    return luaL_error(L, "out of memory");
  }
  memcpy(buf, line, n);
  buf[n] = '\n';
  ssize_t w = write(fd, buf, n + 1);
  free(buf);
  int ok = w == (ssize_t)(n + 1) && fdatasync(fd) == 0;
  close(fd);
  if (!ok) return fail(L, "cannot append to", path);
  lua_pushboolean(L, 1);
  return 1;
}

/* The whole file as a string, or nil and "cannot read PATH: reason". */
static int l_read_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  FILE *f = fopen(path, "rb");
  if (!f) return fail(L, "cannot read", path);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  size_t got;
  do {
    char *p = luaL_prepbuffer(&b);
    got = fread(p, 1, LUAL_BUFFERSIZE, f);
    luaL_addsize(&b, got);
  } while (got == LUAL_BUFFERSIZE);
  int bad = ferror(f);
  fclose(f);
  if (bad) return fail(L, "cannot read", path);
  luaL_pushresult(&b);
  return 1;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted entry names, without "." and "..". */
static int l_listdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  DIR *d = opendir(path);
  if (!d) return fail(L, "cannot list", path);
  size_t n = 0, cap = 64;
  char **names = malloc(cap * sizeof *names);
  struct dirent *e;
  while (names && (e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (n == cap) {
      char **grown = realloc(names, (cap *= 2) * sizeof *names);
      if (!grown) break;
      names = grown;
    }
    names[n++] = strdup(e->d_name);
  }
  closedir(d);
  if (!names) return luaL_error(L, "out of memory");
  qsort(names, n, sizeof *names, cmp_str);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, names[i]);
    lua_rawseti(L, -2, (int)i + 1);
    free(names[i]);
  }
  free(names);
  return 1;
}

/* "file", "directory", "other", or nil when absent. */
static int l_kind(lua_State *L) {
  struct stat st;
  if (stat(luaL_checkstring(L, 1), &st) != 0) return 0;
  lua_pushstring(L, S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory" : "other");
  lua_pushnumber(L, (double)st.st_size);
  return 2;
}

static int l_realpath(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char *r = realpath(path, NULL);
  if (!r) return fail(L, "cannot resolve", path);
  lua_pushstring(L, r);
  free(r);
  return 1;
}

static int l_uname(lua_State *L) {
  struct utsname u;
  if (uname(&u) != 0) return 0;
  lua_createtable(L, 0, 4);
  lua_pushstring(L, u.sysname); lua_setfield(L, -2, "sysname");
  lua_pushstring(L, u.release); lua_setfield(L, -2, "release");
  lua_pushstring(L, u.machine); lua_setfield(L, -2, "machine");
  lua_pushstring(L, u.nodename); lua_setfield(L, -2, "nodename");
  return 1;
}

static int l_exe_path(lua_State *L) {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n < 0) return 0;
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

int luaopen_moonforge_host(lua_State *L) {
  static const luaL_Reg fns[] = {
    {"interrupted", l_interrupted}, {"isatty", l_isatty}, {"term_width", l_term_width},
    {"clock", l_clock}, {"time", l_time}, {"getpid", l_getpid}, {"pid_alive", l_pid_alive},
    {"mkdir_p", l_mkdir_p}, {"write_atomic", l_write_atomic}, {"append_line", l_append_line},
    {"read_file", l_read_file},
    {"listdir", l_listdir}, {"kind", l_kind}, {"realpath", l_realpath}, {"uname", l_uname},
    {"exe_path", l_exe_path}, {NULL, NULL}};
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  lua_pushstring(L, MF_GIT_COMMIT);
  lua_setfield(L, -2, "git_commit");
  return 1;
}
