package relay

import (
	"syscall"
)

// prSetChildSubreaper is prctl's PR_SET_CHILD_SUBREAPER (linux/prctl.h).
const prSetChildSubreaper = 36

// becomeReaper makes the relay the reaper of every process orphaned under
// it: as PID 1 of its container it is already (the kernel reparents
// orphans to the namespace's init); otherwise it asks to be a child
// subreaper, as tini does when it is not PID 1.
func becomeReaper() error {
	if syscall.Getpid() == 1 {
		return nil
	}
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return errno
	}
	return nil
}

// reapAll waits for every child of the relay, the command and whatever it
// left behind and the kernel reparented to the relay, so that none stays a
// zombie (each holds a PID of the container's limit until it is reaped). The
// command's wait status is sent on the returned channel; the others are
// dropped. It runs until the relay has no child left, which may be never:
// the relay exits when the command has, and the kernel then kills what
// remains in the container.
func reapAll(command int) <-chan syscall.WaitStatus {
	ch := make(chan syscall.WaitStatus, 1)
	go func() {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, 0, nil)
			switch {
			case err == syscall.EINTR:
			case err != nil: // ECHILD: none left
				return
			case pid == command && (ws.Exited() || ws.Signaled()):
				ch <- ws
			}
		}
	}()
	return ch
}

// statusCode is the relay's exit code for the command's wait status: its
// exit code, or 128+signal (and the signal) when a signal killed it.
func statusCode(ws syscall.WaitStatus) (int, int) {
	if ws.Signaled() {
		return 128 + int(ws.Signal()), int(ws.Signal())
	}
	return ws.ExitStatus(), 0
}
