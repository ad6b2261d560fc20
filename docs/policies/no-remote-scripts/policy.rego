# No line of a run may pipe a download into a shell (`curl ... | sh`,
# `wget -qO- ... | bash`): what would run is then decided by a server at run
# time, not by the reviewed spec. Every line the run executes is looked at:
# every phase (init, plan, apply, perform), with its before and after hooks.
package hangar.initialization

downloaders := ["curl", "wget"]

shells := {"sh", "bash", "zsh", "dash", "ash", "python", "python3", "perl", "ruby", "node"}

deny contains msg if {
	some phase in input.run.phases
	some part in ["before", "commands", "after"]
	some line in phase[part]
	pipes_download_into_shell(line)
	msg := sprintf("%s of phase %s pipes a download into a shell: %q", [part, phase.name, line])
}

pipes_download_into_shell(line) if {
	stages := split(line, "|")
	some i, stage in stages
	i > 0
	some dl in downloaders
	regex.match(sprintf(`(^|[\s;&(])%s(\s|$)`, [dl]), stages[i - 1])
	first_command(stage) in shells
}

# wrappers run the next word as the command.
wrappers := {"sudo", "env", "exec", "command", "nohup"}

# first_command is the program a pipeline stage runs, without its directory:
# "sudo -E /bin/bash -s" -> "bash" (options of wrappers and VAR=value
# assignments are skipped).
first_command(stage) := regex.replace(words[0], `^.*/`, "") if {
	words := [w |
		some w in split(trim_space(stage), " ")
		w != ""
		not w in wrappers
		not startswith(w, "-")
		not contains(w, "=")
	]
}
