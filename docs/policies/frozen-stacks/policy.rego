# Stacks labelled "frozen" run nothing but tasks: no proposed or tracked run
# (so no plan and no apply) starts on them until the label is removed. Tasks
# stay allowed, for one-off commands such as `terraform state list`.
package hangar.initialization

deny contains msg if {
	"frozen" in input.stack.labels
	input.run.type != "TASK"
	msg := sprintf("stack %q is frozen: only tasks may run (this is a %s run)", [
		input.stack.name,
		input.run.type,
	])
}
