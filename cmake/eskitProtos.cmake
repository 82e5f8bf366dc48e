# eskit_add_protos(<target> [PROTO_ROOT <dir>] <file.proto>...)
#
# Compiles the .proto files with protoc-c and adds the generated C to <target>. Each file is
# named relative to PROTO_ROOT (default: the current source directory), which is also the
# import path; its .pb-c.c and .pb-c.h go to the same relative path under the current binary
# directory, which becomes an include directory of <target>: orders/v1/orders.proto is
# included as "orders/v1/orders.pb-c.h". Generated code is compiled without -Werror. protoc-c
# is found on the PATH, or set ESKIT_PROTOC_C. Call it in the directory that creates <target>;
# the target links eskit::eskit, which brings protobuf-c.
#
# Installed with the eskit CMake package (find_package(eskit) defines it); the eskit tree
# includes it too, for examples/hello.
function(eskit_add_protos target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "PROTO_ROOT" "")
  if(NOT arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "eskit_add_protos(${target}): no .proto files given")
  endif()
  set(root "${CMAKE_CURRENT_SOURCE_DIR}")
  if(arg_PROTO_ROOT)
    get_filename_component(root "${arg_PROTO_ROOT}" ABSOLUTE)
  endif()
  find_program(ESKIT_PROTOC_C protoc-c)
  if(NOT ESKIT_PROTOC_C)
    message(FATAL_ERROR "eskit_add_protos(${target}): protoc-c was not found; install it "
      "(Debian: apt-get install protobuf-c-compiler) or set ESKIT_PROTOC_C to its path")
  endif()
  set(out "${CMAKE_CURRENT_BINARY_DIR}")
  foreach(proto IN LISTS arg_UNPARSED_ARGUMENTS)
    get_filename_component(abs "${proto}" ABSOLUTE BASE_DIR "${root}")
    file(RELATIVE_PATH rel "${root}" "${abs}")
    if(rel MATCHES "^\\.\\./")
      message(FATAL_ERROR "eskit_add_protos(${target}): ${proto} is not below PROTO_ROOT ${root}")
    endif()
    string(REGEX REPLACE "\\.proto$" "" stem "${rel}")
    add_custom_command(
      OUTPUT "${out}/${stem}.pb-c.c" "${out}/${stem}.pb-c.h"
      COMMAND "${ESKIT_PROTOC_C}" "--c_out=${out}" "-I${root}" "${abs}"
      DEPENDS "${abs}"
      COMMENT "protoc-c ${rel}"
      VERBATIM)
    target_sources(${target} PRIVATE "${out}/${stem}.pb-c.c" "${out}/${stem}.pb-c.h")
    if(CMAKE_C_COMPILER_ID MATCHES "GNU|Clang")
      set_source_files_properties("${out}/${stem}.pb-c.c" PROPERTIES COMPILE_OPTIONS -Wno-error)
    endif()
  endforeach()
  target_include_directories(${target} PUBLIC "${out}")
endfunction()
