/*
 * The moonforge executable: a LuaJIT host. It sets up the Lua state with the
 * embedded Lua library and the host modules, installs signal handling so a
 * Ctrl-C or kill interrupts the running recipe cleanly, and hands the command
 * line to moonforge.cli, which does everything else.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "embedded.h"
#include "host.h"

static lua_State *main_state;

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted");
}

static void on_signal(int sig) {
  mf_host_note_interrupt(sig);
  /* A second signal ends the process the default way. */
  signal(sig, SIG_DFL);
  if (main_state) lua_sethook(main_state, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* package.loaders entry that finds modules compiled into the executable. */
static int embedded_searcher(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  for (const mf_embedded_file *f = mf_embedded_files; f->module; f++) {
    if (strcmp(f->module, name) != 0) continue;
    if (luaL_loadbuffer(L, f->data, f->size, f->chunk) != 0) return lua_error(L);
    return 1;
  }
  lua_pushfstring(L, "\n\tno embedded module '%s'", name);
  return 1;
}

static int embedded_source(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  for (const mf_embedded_file *f = mf_embedded_files; f->module; f++)
    if (strcmp(f->module, name) == 0) {
      lua_pushlstring(L, f->data, f->size);
      return 1;
    }
  return 0;
}

/* Embedded modules come first, unless MOONFORGE_LUA_PATH points at a source
 * tree of the Lua library (for working on it without rebuilding). */
static void install_searcher(lua_State *L) {
  const char *dev = getenv("MOONFORGE_LUA_PATH");
  lua_getglobal(L, "package");
  if (dev && *dev) {
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", dev, dev);
    lua_getfield(L, -2, "path");
    lua_concat(L, 2);
    lua_setfield(L, -2, "path");
  }
  lua_getfield(L, -1, "loaders");
  int n = (int)lua_objlen(L, -1);
  int at = (dev && *dev) ? n + 1 : 2;
  for (int i = n; i >= at; i--) {
    lua_rawgeti(L, -1, i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushcfunction(L, embedded_searcher);
  lua_rawseti(L, -2, at);
  lua_pop(L, 1);
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_moonforge_host);
  lua_setfield(L, -2, "moonforge.host");
  lua_pushcfunction(L, luaopen_moonforge_json);
  lua_setfield(L, -2, "moonforge.json");
  lua_pop(L, 2);
  lua_pushcfunction(L, embedded_source);
  lua_setglobal(L, "__mf_embedded_source");
}

static int traceback(lua_State *L) {
  if (!lua_isstring(L, 1)) return 1;
  luaL_traceback(L, L, lua_tostring(L, 1), 1);
  return 1;
}

int main(int argc, char **argv) {
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "moonforge: cannot create the Lua state (out of memory)\n");
    return 1;
  }
  main_state = L;
  luaL_openlibs(L);
  install_searcher(L);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);

  lua_pushcfunction(L, traceback);
  lua_getglobal(L, "require");
  lua_pushstring(L, "moonforge.cli");
  int status = lua_pcall(L, 1, 1, 1);
  if (status == 0) {
    lua_getfield(L, -1, "main");
    lua_newtable(L);
    for (int i = 0; i < argc; i++) {
      lua_pushstring(L, argv[i]);
      lua_rawseti(L, -2, i);
    }
    status = lua_pcall(L, 1, 1, 1);
  }
  int code;
  if (status != 0) {
    fprintf(stderr, "moonforge: internal error: %s\n", lua_tostring(L, -1));
    code = 70;
  } else {
    code = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : 0;
  }
  main_state = NULL;
  lua_close(L);
  return code;
}
