# Writes OUT, a C header defining MF_GIT_COMMIT: the checkout's commit,
# with "-dirty" when tracked files differ from it, or "" outside a git
# checkout. Run at every build with -P, so that a run records the commit
# the binary was built from, not the one CMake was configured at; the file
# is rewritten only when the text changes, so an unchanged commit rebuilds
# nothing.
execute_process(COMMAND git rev-parse --short=12 HEAD WORKING_DIRECTORY "${ROOT}"
                OUTPUT_VARIABLE commit OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(commit)
  execute_process(COMMAND git status --porcelain --untracked-files=no WORKING_DIRECTORY "${ROOT}"
                  OUTPUT_VARIABLE changes OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(changes)
    string(APPEND commit "-dirty")
  endif()
endif()
set(text "#define MF_GIT_COMMIT \"${commit}\"\n")
set(old "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT text STREQUAL old)
  file(WRITE "${OUT}" "${text}")
endif()
