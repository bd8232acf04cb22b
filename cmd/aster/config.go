package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust/identity"
)

func init() { addCommand(newConfigCmd) }

// configFlag is the persistent flag naming the TOML configuration file.
const configFlag = "config"

// strictFlag is the persistent flag that makes unknown keys in the
// configuration file an error instead of a warning.
const strictFlag = "strict"

// loadCLIConfig resolves the configuration for a command: defaults, the
// file named by --config (or file, if not empty), then ASTER_* variables.
// Warnings go to the command's stderr; a bad configuration is a usage error
// (exit 2).
func loadCLIConfig(c *cobra.Command, file string) (config.Config, error) {
	if file == "" {
		file, _ = c.Flags().GetString(configFlag)
	}
	var cfg config.Config
	var err error
	strict, _ := c.Flags().GetBool(strictFlag)
	if file != "" && strict {
		cfg, err = config.LoadFileStrict(file)
	} else if file != "" {
		cfg, err = config.LoadFile(file)
	} else {
		cfg, err = config.Load()
	}
	if err != nil {
		return config.Config{}, configError(err)
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(c.ErrOrStderr(), "warning:", w)
	}
	return cfg, nil
}

// newConfigCmd builds "aster config" and its subcommands.
func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Inspect the aster configuration",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return usageErrorf("missing subcommand (see '%s --help')", c.CommandPath())
		},
	}
	cmd.AddCommand(newConfigPrintCmd())
	return cmd
}

func newConfigPrintCmd() *cobra.Command {
	var file string
	var asJSON bool
	cmd := &cobra.Command{
		Use: "print [--file aster.toml] [--json]",
		Example: `  aster config print
  aster config print --file aster.toml --json
  ASTER_LOG_LEVEL=debug aster config print --config aster.toml`,
		Short: "Print the resolved configuration with the source of each value",
		Long: `Print the configuration an aster server or client would use, by section,
with the source of every value: "default", the TOML file, or the ASTER_*
environment variable (which always wins over the file).

Secrets are masked: secret_key shows "****..." and the last 8 hex characters
of the key, the enrollment credential path and IID token their last 8
characters. The root public key is shown in full. Unset values read
<not set>, <default>, <any> (bind_addr) or <in-memory> (storage path).

A bad value, or a setting that is not supported yet, fails with exit status
2 and a message naming the field, its source and the value. An unknown key
in the file is a warning on stderr (an error, exit 2, with --strict), as is
an ASTER_* variable that looks misspelt. An identity or credential file that
cannot be read or parsed (identity_file, enrollment_credential_file; also an
.aster-identity found in the working directory) is reported after the
configuration is printed, with exit status 2: a server refuses to start with
it (a client command ignores a broken .aster-identity it was not asked to
use, with a warning).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := loadCLIConfig(c, file)
			if err != nil {
				return err
			}
			if err := cfg.Print(c.OutOrStdout(), asJSON); err != nil {
				return fmt.Errorf("writing output: %w", err)
			}
			return checkIdentityFiles(&cfg)
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "TOML configuration file (default: the global --config, else none: defaults and ASTER_* variables only)")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print one JSON object {"section":{"field":{"value":...,"source":"..."}}}`)
	return cmd
}

// configError reports a configuration that cannot be used as a usage
// error (exit 2) with the code --json-errors shows: UNIMPLEMENTED for a
// setting not supported yet (config.ErrNotSupported), the error's own
// status code if it has one, else INVALID_ARGUMENT.
func configError(err error) error {
	code := status.InvalidArgument
	if errors.Is(err, config.ErrNotSupported) {
		code = status.Unimplemented
	} else if c := status.CodeOf(err); c != status.Unknown && c != status.OK {
		code = c // e.g. an OTEL_* setup error that carries a code
	}
	return &cliError{exit: ExitUsage, code: code, msg: "config: " + strings.TrimPrefix(err.Error(), "config: "), err: err}
}

// checkIdentityFiles reports an identity or credential file of cfg that
// cannot be used, naming the field and its source (exit 2).
func checkIdentityFiles(cfg *config.Config) error {
	for _, f := range []struct{ key, path string }{
		{"trust.enrollment_credential_file", cfg.EnrollmentCredentialFile},
		{"identity.identity_file", cfg.IdentityFile},
	} {
		if f.path == "" {
			continue
		}
		err := config.CheckTextFile(f.path)
		var id *identity.Identity
		if err == nil {
			id, err = identity.Load(f.path)
		}
		if err == nil && id.Key == nil && f.key == "identity.identity_file" {
			err = errors.New("has no [node] secret_key")
		}
		if err != nil {
			src := cfg.Source(f.key)
			if src == config.SourceDefault {
				src = "found in the working directory"
			}
			return &cliError{exit: ExitUsage, code: status.InvalidArgument,
				msg: fmt.Sprintf("config: %s (%s, %s) cannot be used: %v", f.key, f.path, src, err), err: err}
		}
	}
	return nil
}
