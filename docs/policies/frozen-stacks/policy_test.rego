package hangar.initialization_test

import data.hangar.initialization

run_with(type, labels) := {
	"run": {"id": "01JRUN", "type": type, "commands": []},
	"stack": {"id": "network", "name": "Network", "labels": labels},
	"commit": {"sha": "4b825dc", "branch": "main", "message": "Add subnet", "author": "ada"},
	"runner_image": "registry.example.com/runner:1",
	"environment_variables": [],
	"worker_metadata": {},
	"pool_id": "pool-eu-1",
}

test_tracked_run_on_frozen_stack_denied if {
	initialization.deny == {`stack "Network" is frozen: only tasks may run (this is a TRACKED run)`} with input as run_with("TRACKED", ["team:net", "frozen"])
}

test_proposed_run_on_frozen_stack_denied if {
	count(initialization.deny) == 1 with input as run_with("PROPOSED", ["frozen"])
}

test_task_on_frozen_stack_allowed if {
	task := object.union(run_with("TASK", ["frozen"]), {"run": {"id": "01JRUN", "type": "TASK", "commands": ["terraform state list"]}})
	count(initialization.deny) == 0 with input as task
}

test_unfrozen_stack_allowed if {
	count(initialization.deny) == 0 with input as run_with("TRACKED", ["team:net"])
}

test_label_match_is_exact if {
	count(initialization.deny) == 0 with input as run_with("TRACKED", ["frozen-until-friday", "Frozen"])
}
