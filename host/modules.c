/* SPDX-License-Identifier: MIT */
/* modules.c -- the C modules preloaded into package.preload. */
#include "host.h"

/* Each C subsystem exposes luaopen_<name> for its private "*.core"
 * module; the documented surface is the Lua module of the same family
 * under lua/. Add new C modules to this table. */
static const luaL_Reg preload[] = {
    {"orrery.core", luaopen_orrery_core},
    {"orrery.json.core", luaopen_orrery_json_core},
    {"orrery.net.core", luaopen_orrery_net_core},
    {"orrery.http.core", luaopen_orrery_http_core},
    {"orrery.http.client.core", luaopen_orrery_http_client_core},
    {"orrery.sqlite.core", luaopen_orrery_sqlite_core},
    {"orrery.pg.core", luaopen_orrery_pg_core},
    {NULL, NULL},
};

void modules_preload(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  for (const luaL_Reg *m = preload; m->name; m++) {
    lua_pushcfunction(L, m->func);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 2);
}
