# The pool's run-initialization policy (Rego v1, package hangar.initialization;
# a run starts only if `deny` is empty). Mounted into the policy service at
# /etc/hangar/policy/policy.rego: edit it, then `docker compose restart policy`.
# More examples: docs/policies/ (allowed-registry, main-branch-only, ...);
# the input document: docs/POLICY.md.
#
# This one allows every run, except that stacks labelled "frozen" run nothing
# but tasks: no proposed or tracked run (no plan, no apply) until the label is
# removed. Tasks stay allowed, for one-off commands such as
# `terraform state list`, as long as no line of any phase or hook changes
# state. (The same rules as docs/policies/frozen-stacks.)
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
