package hangar.initialization_test

import data.hangar.initialization

run_with(image) := {
	"run": {"id": "01JRUN", "type": "TRACKED", "commands": []},
	"stack": {"id": "network", "name": "Network", "labels": []},
	"commit": {"sha": "4b825dc", "branch": "main", "message": "Add subnet", "author": "ada"},
	"runner_image": image,
	"environment_variables": ["AWS_REGION"],
	"worker_metadata": {},
	"pool_id": "pool-eu-1",
}

test_image_from_registry_allowed if {
	count(initialization.deny) == 0 with input as run_with("registry.example.com/runner/terraform:1.9")
}

test_image_from_docker_hub_denied if {
	initialization.deny == {`runner image "hashicorp/terraform:1.9" is not from an allowed registry (registry.example.com/)`} with input as run_with("hashicorp/terraform:1.9")
}

test_look_alike_host_denied if {
	count(initialization.deny) == 1 with input as run_with("registry.example.com.evil.io/runner:1")
}

test_registry_without_path_separator_denied if {
	count(initialization.deny) == 1 with input as run_with("registry.example.com:5000/runner:1")
}

test_empty_image_denied if {
	initialization.deny == {"runner image is empty: set a runner image from registry.example.com/"} with input as run_with("")
}
