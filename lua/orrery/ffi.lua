-- SPDX-License-Identifier: MIT
-- orrery.ffi -- the FFI surface declared once in host/ffi_cdef.h.
local ffi = require "ffi"
ffi.cdef(require("orrery.core").cdef())
return ffi.C
