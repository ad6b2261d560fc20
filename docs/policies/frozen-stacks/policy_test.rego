package hangar.initialization_test

import data.hangar.initialization

run_with(type, labels, phases) := {
	"run": {"id": "01JRUN", "type": type, "commands": [], "phases": phases, "needs_confirmation": false},
	"stack": {"id": "network", "name": "Network", "labels": labels},
	"commit": {"sha": "4b825dc", "branch": "main", "message": "Add subnet", "author": "ada"},
	"source": {"url": "https://git.example.com/acme/infra.git", "ref": "main", "project_root": ""},
	"runner_image": "registry.example.com/runner:1",
	"environment_variables": [],
	"worker_metadata": {},
	"pool_id": "pool-eu-1",
}

phase(name, before, commands, after) := {"name": name, "before": before, "commands": commands, "after": after}

read_only_task := [
	phase("init", [], ["terraform init -input=false"], []),
	phase("perform", ["echo listing"], ["terraform state list"], ["echo done"]),
]

plan := [phase("init", [], ["terraform init"], []), phase("plan", [], ["terraform plan"], [])]

test_tracked_run_on_frozen_stack_denied if {
	initialization.deny == {`stack "Network" is frozen: only tasks may run (this is a TRACKED run)`} with input as run_with("TRACKED", ["team:net", "frozen"], plan)
}

test_proposed_run_on_frozen_stack_denied if {
	count(initialization.deny) == 1 with input as run_with("PROPOSED", ["frozen"], plan)
}

test_read_only_task_on_frozen_stack_allowed if {
	count(initialization.deny) == 0 with input as run_with("TASK", ["frozen"], read_only_task)
}

test_apply_in_a_before_hook_denied if {
	phases := [
		phase("init", [], ["terraform init"], []),
		phase("perform", ["terraform apply -auto-approve"], ["terraform state list"], []),
	]
	initialization.deny == {`stack "Network" is frozen: before of phase perform runs "terraform apply", which changes state`} with input as run_with("TASK", ["frozen"], phases)
}

test_destroy_in_the_init_phase_denied if {
	phases := [
		phase("init", [], ["terraform init", "terraform destroy -auto-approve"], []),
		phase("perform", [], ["terraform state list"], []),
	]
	initialization.deny == {`stack "Network" is frozen: commands of phase init runs "terraform destroy", which changes state`} with input as run_with("TASK", ["frozen"], phases)
}

test_state_rm_in_an_after_hook_denied if {
	phases := [phase("perform", [], ["terraform state list"], ["terraform state rm aws_vpc.main"])]
	initialization.deny == {`stack "Network" is frozen: after of phase perform runs "terraform state rm", which changes state`} with input as run_with("TASK", ["frozen"], phases)
}

test_unfrozen_stack_allowed if {
	count(initialization.deny) == 0 with input as run_with("TRACKED", ["team:net"], plan)
}

test_apply_task_on_unfrozen_stack_allowed if {
	phases := [phase("perform", ["terraform apply -auto-approve"], [], [])]
	count(initialization.deny) == 0 with input as run_with("TASK", ["team:net"], phases)
}

test_label_match_is_exact if {
	count(initialization.deny) == 0 with input as run_with("TRACKED", ["frozen-until-friday", "Frozen"], plan)
}
