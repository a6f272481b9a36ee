/*
 * moonforge.json: JSON for the Lua library, through jansson.
 *
 * decode(text) -> value. Objects and arrays become tables carrying the
 * metatables json.object / json.array, so they encode back as they came;
 * JSON null becomes json.null.
 * encode(value [, indent]) -> text. A table is an array when it has the array
 * metatable, or when it is a non-empty sequence; otherwise an object (keys
 * must be strings). Object keys are sorted, so equal values give equal text.
 * Integral numbers below 2^53 are written as integers, others with 17
 * significant digits (round-trip exact); NaN and infinities become null.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>

#include "host.h"

static char null_sentinel;
static const char *ARRAY_MT = "moonforge.json.array";
static const char *OBJECT_MT = "moonforge.json.object";

static void push_json(lua_State *L, json_t *j, int depth) {
  if (depth > 200) luaL_error(L, "json: nesting deeper than 200");
  luaL_checkstack(L, 4, "json: nesting");
  switch (json_typeof(j)) {
  case JSON_OBJECT: {
    const char *key;
    json_t *v;
    lua_createtable(L, 0, (int)json_object_size(j));
    json_object_foreach(j, key, v) {
      push_json(L, v, depth + 1);
      lua_setfield(L, -2, key);
    }
    luaL_getmetatable(L, OBJECT_MT);
    lua_setmetatable(L, -2);
    break;
  }
  case JSON_ARRAY: {
    size_t i;
    json_t *v;
    lua_createtable(L, (int)json_array_size(j), 0);
    json_array_foreach(j, i, v) {
      push_json(L, v, depth + 1);
      lua_rawseti(L, -2, (int)i + 1);
    }
    luaL_getmetatable(L, ARRAY_MT);
    lua_setmetatable(L, -2);
    break;
  }
  case JSON_STRING: lua_pushlstring(L, json_string_value(j), json_string_length(j)); break;
  case JSON_INTEGER: lua_pushnumber(L, (lua_Number)json_integer_value(j)); break;
  case JSON_REAL: lua_pushnumber(L, json_real_value(j)); break;
  case JSON_TRUE: lua_pushboolean(L, 1); break;
  case JSON_FALSE: lua_pushboolean(L, 0); break;
  case JSON_NULL: lua_pushlightuserdata(L, &null_sentinel); break;
  }
}

static int l_decode(lua_State *L) {
  size_t n;
  const char *text = luaL_checklstring(L, 1, &n);
  json_error_t err;
  json_t *j = json_loadb(text, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
  if (!j) {
    lua_pushnil(L);
    lua_pushfstring(L, "line %d, column %d: %s", err.line, err.column, err.text);
    return 2;
  }
  push_json(L, j, 0);
  json_decref(j);
  return 1;
}

static int has_metatable(lua_State *L, int idx, const char *name) {
  if (!lua_getmetatable(L, idx)) return 0;
  luaL_getmetatable(L, name);
  int same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same;
}

/* Non-empty table whose keys are exactly 1..n. */
static int is_sequence(lua_State *L, int idx) {
  size_t n = lua_objlen(L, idx), count = 0;
  if (n == 0) return 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TNUMBER) {
      lua_pop(L, 1);
      return 0;
    }
    count++;
  }
  return count == n;
}

static json_t *to_json(lua_State *L, int idx, int depth);

static json_t *table_to_json(lua_State *L, int idx, int depth) {
  if (has_metatable(L, idx, ARRAY_MT) || is_sequence(L, idx)) {
    json_t *a = json_array();
    size_t n = lua_objlen(L, idx);
    for (size_t i = 1; i <= n; i++) {
      lua_rawgeti(L, idx, (int)i);
      json_array_append_new(a, to_json(L, lua_gettop(L), depth + 1));
      lua_pop(L, 1);
    }
    return a;
  }
  json_t *o = json_object();
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) != LUA_TSTRING) {
      json_decref(o);
      luaL_error(L, "json: object key of type %s (keys must be strings)", luaL_typename(L, -2));
    }
    json_object_set_new(o, lua_tostring(L, -2), to_json(L, lua_gettop(L), depth + 1));
    lua_pop(L, 1);
  }
  return o;
}

static json_t *to_json(lua_State *L, int idx, int depth) {
  if (depth > 200) luaL_error(L, "json: nesting deeper than 200 (a cycle?)");
  luaL_checkstack(L, 4, "json: nesting");
  switch (lua_type(L, idx)) {
  case LUA_TNIL: return json_null();
  case LUA_TBOOLEAN: return json_boolean(lua_toboolean(L, idx));
  case LUA_TNUMBER: {
    double x = lua_tonumber(L, idx);
    if (!isfinite(x)) return json_null();
    if (x == floor(x) && fabs(x) < 9007199254740992.0) return json_integer((json_int_t)x);
    return json_real(x);
  }
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    json_t *j = json_stringn(s, n);
    if (!j) luaL_error(L, "json: string is not valid UTF-8: %.40s", s);
    return j;
  }
  case LUA_TTABLE: return table_to_json(L, idx, depth);
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == &null_sentinel) return json_null();
    /* fall through */
  default:
    luaL_error(L, "json: cannot encode a %s", luaL_typename(L, idx));
    return NULL;
  }
}

static int l_encode(lua_State *L) {
  int indent = (int)luaL_optinteger(L, 2, 0);
  lua_settop(L, 2);
  json_t *j = to_json(L, 1, 0);
  size_t flags = JSON_SORT_KEYS | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17);
  if (indent > 0) flags |= JSON_INDENT(indent);
  else flags |= JSON_COMPACT;
  char *s = json_dumps(j, flags);
  json_decref(j);
  if (!s) return luaL_error(L, "json: encoding failed");
  lua_pushstring(L, s);
  free(s);
  return 1;
}

static int mark(lua_State *L, const char *mt) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  luaL_getmetatable(L, mt);
  lua_setmetatable(L, 1);
  return 1;
}

static int l_array(lua_State *L) { return mark(L, ARRAY_MT); }
static int l_object(lua_State *L) { return mark(L, OBJECT_MT); }

int luaopen_moonforge_json(lua_State *L) {
  static const luaL_Reg fns[] = {{"decode", l_decode}, {"encode", l_encode},
                                 {"array", l_array}, {"object", l_object}, {NULL, NULL}};
  luaL_newmetatable(L, ARRAY_MT);
  luaL_newmetatable(L, OBJECT_MT);
  lua_pop(L, 2);
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  lua_pushlightuserdata(L, &null_sentinel);
  lua_setfield(L, -2, "null");
  return 1;
}
