-- Binds the engine's public C API (engine/include/moonforge.h, embedded in
-- the executable) through LuaJIT's FFI. Every other module reaches C only
-- through this one.
local ffi = require "ffi"

local header = assert(__mf_embedded_source("moonforge.cdef_h"), "public header not embedded")
-- The FFI parser takes declarations only: drop preprocessor lines.
ffi.cdef((header:gsub("\n#[^\n]*", "\n")))

local C = ffi.C
local M = { C = C, ffi = ffi }

function M.errmsg() return ffi.string(C.mf_errmsg()) end

-- check(rc): raise the engine's message when rc is -1; return rc otherwise.
function M.check(rc, level)
  if rc == -1 then error(M.errmsg(), (level or 1) + 1) end
  return rc
end

-- check_ptr(p): raise the engine's message when p is NULL.
function M.check_ptr(p, level)
  if p == nil then error(M.errmsg(), (level or 1) + 1) end
  return p
end

function M.version() return ffi.string(C.mf_version()) end

function M.sha256(data)
  local out = ffi.new("char[65]")
  M.check(C.mf_sha256_bytes(data, #data, out), 2)
  return ffi.string(out, 64)
end

function M.sha256_file(path)
  local out = ffi.new("char[65]")
  M.check(C.mf_sha256_file(path, out), 2)
  return ffi.string(out, 64)
end

function M.hash64(s) return C.mf_hash64(s, #s) end

function M.threads() return C.mf_threads() end

return M
