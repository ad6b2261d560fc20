# Runner images may only come from the organisation's registry.
#
# Each prefix ends with "/" so that a look-alike host such as
# registry.example.com.evil.io/runner is not mistaken for the real one.
package hangar.initialization

allowed_prefixes := {"registry.example.com/"}

deny contains "runner image is empty: set a runner image from registry.example.com/" if {
	input.runner_image == ""
}

deny contains msg if {
	input.runner_image != ""
	not allowed_image(input.runner_image)
	msg := sprintf("runner image %q is not from an allowed registry (%s)", [
		input.runner_image,
		concat(", ", sort(allowed_prefixes)),
	])
}

allowed_image(image) if {
	some prefix in allowed_prefixes
	startswith(image, prefix)
}
