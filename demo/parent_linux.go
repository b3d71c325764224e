package demo

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
)

// stopWithParent asks the kernel to send the demo SIGTERM, which stops it
// as Ctrl-C does, when its parent process dies. `go run` is such a parent:
// it runs the demo as a child, lets Ctrl-C reach it, but dies of a SIGTERM
// without passing it on, which left the demo running with its ports and
// its temporary directory.
func stopWithParent() error {
	parent := os.Getppid()
	// The setting belongs to the calling thread; Go keeps the thread after
	// the unlock (it ends only threads whose locked goroutine exits).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0); errno != 0 {
		return fmt.Errorf("asking to be stopped with the parent process: %v", errno)
	}
	if os.Getppid() != parent { // it died before the request took effect
		return errors.New("the parent process has exited; not starting the demo")
	}
	return nil
}
