# Stacks labelled "frozen" run nothing but read-only tasks: no proposed or
# tracked run (so no plan and no apply) starts on them until the label is
# removed. Tasks stay allowed, for one-off commands such as
# `terraform state list`, but no line of a task may change state: every phase
# is looked at (init too), with its before and after hooks, not just the
# task's commands.
package hangar.initialization

deny contains msg if {
	"frozen" in input.stack.labels
	input.run.type != "TASK"
	msg := sprintf("stack %q is frozen: only tasks may run (this is a %s run)", [
		input.stack.name,
		input.run.type,
	])
}

# Commands that change a stack's state or infrastructure.
state_changing := [
	"terraform apply", "terraform destroy", "terraform import", "terraform taint",
	"terraform state rm", "terraform state mv", "terraform state push",
	"tofu apply", "tofu destroy", "tofu import",
]

deny contains msg if {
	"frozen" in input.stack.labels
	input.run.type == "TASK"
	some phase in input.run.phases
	some part in ["before", "commands", "after"]
	some line in phase[part]
	some cmd in state_changing
	contains(line, cmd)
	msg := sprintf("stack %q is frozen: %s of phase %s runs %q, which changes state", [
		input.stack.name, part, phase.name, cmd,
	])
}
