package hangar.initialization_test

import data.hangar.initialization

run_with(type, branch, message) := {
	"run": {"id": "01JRUN", "type": type, "commands": []},
	"stack": {"id": "network", "name": "Network", "labels": []},
	"commit": {"sha": "4b825dc642cb6eb9a060e54bf8d69288fbee4904", "branch": branch, "message": message, "author": "ada"},
	"runner_image": "registry.example.com/runner:1",
	"environment_variables": [],
	"worker_metadata": {},
	"pool_id": "pool-eu-1",
}

test_tracked_run_on_main_allowed if {
	count(initialization.deny) == 0 with input as run_with("TRACKED", "main", "Add subnet")
}

test_tracked_run_on_feature_branch_denied if {
	initialization.deny == {`tracked runs start only from main, not from branch "feature/vpc"`} with input as run_with("TRACKED", "feature/vpc", "Add subnet")
}

test_proposed_run_on_feature_branch_allowed if {
	count(initialization.deny) == 0 with input as run_with("PROPOSED", "feature/vpc", "Add subnet")
}

test_skip_ci_denied if {
	initialization.deny == {"commit 4b825dc asks to skip CI ([skip ci] in its message)"} with input as run_with("PROPOSED", "feature/vpc", "Fix typo [skip ci]")
}

test_skip_ci_is_case_insensitive if {
	count(initialization.deny) == 1 with input as run_with("TRACKED", "main", "docs: [SKIP CI]")
}

test_both_reasons_reported if {
	count(initialization.deny) == 2 with input as run_with("TRACKED", "release", "[skip ci] bump")
}
