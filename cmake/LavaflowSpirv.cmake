# lf_spirv_header(OUT_VAR NAME SOURCE)
#   Compile the GLSL compute shader SOURCE to SPIR-V at build time with
#   glslangValidator and wrap it as `const uint32_t lf_spv_<NAME>[]` in
#   <build>/generated/lf_shaders/<NAME>.spv.h. Binaries embed the code, so
#   they never look for a .spv file at run time. OUT_VAR receives the header
#   path; list it among a target's sources so that it is generated first.
function(lf_spirv_header out_var name source)
  set(dir ${PROJECT_BINARY_DIR}/generated/lf_shaders)
  set(out ${dir}/${name}.spv.h)
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${dir}
    COMMAND ${Vulkan_GLSLANG_VALIDATOR_EXECUTABLE} -V --target-env vulkan1.1 --vn lf_spv_${name} -o ${out} ${source}
    DEPENDS ${source}
    COMMENT "Compiling compute shader ${name} to SPIR-V"
    VERBATIM)
  set(${out_var} ${out} PARENT_SCOPE)
endfunction()
