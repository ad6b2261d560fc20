# Example run-initialization policy (docs/POLICY.md): stacks labelled "frozen"
# run nothing but tasks; no proposed or tracked run (so no plan and no apply)
# starts on them until the label is removed. Replace this file with your own
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
