# Example run-initialization policy (docs/POLICY.md): stacks labelled "frozen"
# run nothing but tasks; no proposed or tracked run (so no plan and no apply)
# starts on them until the label is removed, and tasks on them change no
# state (docs/policies/frozen-stacks). Replace this file with your own
# policy; kustomize rolls the policy pods when it changes.
package hangar.initialization

deny contains msg if {
	"frozen" in input.stack.labels
	input.run.type != "TASK"
	msg := sprintf("stack %q is frozen: only tasks may run (this is a %s run)", [
		input.stack.name,
		input.run.type,
	])
}

# Tasks on a frozen stack may not change state: every line of every phase is
# looked at, before and after hooks included.
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
