package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"
)

// version is the CLI's version. Release builds set it with
// -ldflags "-X main.version=v1.2.3"; otherwise it is the main module's
// version from the build info, or "dev".
var version string

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// commands holds the constructors of the top-level subcommands. Each
// command lives in its own file and registers itself there:
//
//	func init() { addCommand(newShellCmd) }
//
// Constructors (rather than shared *cobra.Command values) give every
// Execute, and every test, a fresh command tree with fresh flag values.
var commands []func() *cobra.Command

// addCommand registers a top-level subcommand constructor.
func addCommand(newCmd func() *cobra.Command) { commands = append(commands, newCmd) }

// jsonErrorsFlag is the persistent flag that switches error output to JSON.
const jsonErrorsFlag = "json-errors"

// newRootCmd builds the aster command tree.
func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "aster",
		Short: "Call and operate aster services",
		Long: `aster calls and operates aster services: peers identified by ed25519 keys
and reached by "aster1..." addresses.

` + exitCodeTable,
		Version:       versionString(),
		SilenceErrors: true, // Execute prints errors in the chosen format
		SilenceUsage:  true,
	}
	root.PersistentFlags().Bool(jsonErrorsFlag, false, `print errors on stderr as one JSON object {"code","code_num","message","exit"}`)
	root.PersistentFlags().String(configFlag, "", "TOML configuration file; ASTER_* variables override it (see 'aster config print')")
	root.PersistentFlags().Bool(strictFlag, false, "treat unknown keys in the configuration file as an error (default: a warning)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErrorf("%v (see '%s --help')", err, c.CommandPath())
	})
	for _, newCmd := range commands {
		root.AddCommand(newCmd())
	}
	return root
}

// errTerminated is the cancel cause of a command's context on SIGTERM.
var errTerminated = errors.New("terminated (SIGTERM)")

// sigtermAnnotation marks a client command that exits with ExitTerminated
// (143) after SIGTERM cancelled it cleanly. Commands without it (a relay
// draining on SIGTERM) exit as they end: 0 for a clean shutdown.
const sigtermAnnotation = "aster/sigterm-exit"

// exitsOnSIGTERM adds sigtermAnnotation to cmd.
func exitsOnSIGTERM(cmd *cobra.Command) *cobra.Command {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations[sigtermAnnotation] = "143"
	return cmd
}

// Execute runs the CLI with the process's arguments and standard streams
// and returns the exit status. SIGINT and SIGTERM cancel the command's
// context (a second signal kills the process); after SIGTERM the command
// ends cleanly and the exit status of a client command (call, list,
// describe, contract) is ExitTerminated (143).
func Execute() int {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case s := <-sigs:
			signal.Stop(sigs) // restore default handling: a second signal kills
			if s == syscall.SIGTERM {
				cancel(errTerminated)
			} else {
				cancel(context.Canceled)
			}
		case <-ctx.Done():
		}
	}()
	defer signal.Stop(sigs)
	return run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
}

// run executes the command line args and returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if errors.Is(context.Cause(ctx), errTerminated) && cmd != nil && cmd.Annotations[sigtermAnnotation] != "" {
		return ExitTerminated
	}
	if err == nil {
		return ExitOK
	}
	ce := classify(err)
	asJSON, _ := root.PersistentFlags().GetBool(jsonErrorsFlag)
	printError(stderr, ce, asJSON)
	return ce.exit
}
