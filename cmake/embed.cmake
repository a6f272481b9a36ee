# Writes OUT, a C file holding every file of FILES as a byte array, with a
# table mapping Lua module names to them. Run at build time with -P.
# BASE is the folder that module names are relative to (runner/lua); the
# public C header is embedded as module "moonforge.cdef_h", and any other
# file that is not Lua as "moonforge.<folder>_assets.<name>" with the dots
# of its name made underscores (playground/index.html:
# "moonforge.playground_assets.index_html").
separate_arguments(FILES)
set(body "#include <stddef.h>\n#include \"embedded.h\"\n")
set(table "const mf_embedded_file mf_embedded_files[] = {\n")
set(i 0)
foreach(f IN LISTS FILES)
  file(READ "${f}" hex HEX)
  string(LENGTH "${hex}" hexlen)
  math(EXPR len "${hexlen} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," arr "${hex}")
  if(f MATCHES "\\.h$")
    set(mod "moonforge.cdef_h")
  elseif(NOT f MATCHES "\\.lua$")
    get_filename_component(dir "${f}" DIRECTORY)
    get_filename_component(folder "${dir}" NAME)
    get_filename_component(name "${f}" NAME)
    string(REPLACE "." "_" name "${name}")
    set(mod "moonforge.${folder}_assets.${name}")
  else()
    file(RELATIVE_PATH rel "${BASE}" "${f}")
    string(REGEX REPLACE "\\.lua$" "" mod "${rel}")
    string(REGEX REPLACE "/init$" "" mod "${mod}")
    string(REPLACE "/" "." mod "${mod}")
  endif()
  file(RELATIVE_PATH chunk "${ROOT}" "${f}")
  string(APPEND body "static const unsigned char file_${i}[] = {${arr}0};\n")
  string(APPEND table "  {\"${mod}\", \"@${chunk}\", (const char *)file_${i}, ${len}},\n")
  math(EXPR i "${i} + 1")
endforeach()
string(APPEND table "  {NULL, NULL, NULL, 0}\n};\n")
file(WRITE "${OUT}.tmp" "${body}${table}")
file(RENAME "${OUT}.tmp" "${OUT}")
