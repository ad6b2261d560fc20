# Commits that ask to skip automation start no run, and tracked runs (the ones
# that apply changes) start only from the main branch. Proposed runs on other
# branches stay allowed, so that pull requests still get a plan.
package hangar.initialization

deny contains msg if {
	contains(lower(input.commit.message), "[skip ci]")
	msg := sprintf("commit %s asks to skip CI ([skip ci] in its message)", [short_sha])
}

deny contains msg if {
	input.run.type == "TRACKED"
	input.commit.branch != "main"
	msg := sprintf("tracked runs start only from main, not from branch %q", [input.commit.branch])
}

short_sha := substring(input.commit.sha, 0, 7)
