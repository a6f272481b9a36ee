/* Host services for the Lua library: OS access and JSON, as Lua C modules. */
#ifndef MF_HOST_H
#define MF_HOST_H
#include <lua.h>

/* Called from the signal handler: remembers that the run must stop. */
void mf_host_note_interrupt(int sig);

int luaopen_moonforge_host(lua_State *L);
int luaopen_moonforge_json(lua_State *L);

#endif
