-- The moonforge library that recipes and scripts load with
--   local mf = require "moonforge"
-- Submodules load on first use: mf.recipe is moonforge.recipe, mf.model is
-- moonforge.model, and so on, so a script pays only for what it touches.
local mf = {}

mf.version = require("moonforge.engine").version()

return setmetatable(mf, {
  __index = function(t, name)
    local ok, mod = pcall(require, "moonforge." .. name)
    if not ok then
      if tostring(mod):find("module 'moonforge." .. name .. "' not found", 1, true) then
        error("moonforge has no module '" .. name .. "'", 2)
      end
      error(mod, 2)
    end
    rawset(t, name, mod)
    return mod
  end,
})
