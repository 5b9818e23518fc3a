// Package config loads and validates the deployer configuration (SPEC §3).
//
// Load starts from Default, overlays the file (YAML, TOML or JSON), then the
// environment (DEPLOYER_<PATH>, e.g. DEPLOYER_GIT_HTTP_LISTEN), and finally
// runs Validate. The result is a plain typed *Config handed down to the rest
// of the daemon; viper never leaves this package.
//
// Invariants of a *Config returned by Load:
//   - every key in the file was known (unknown keys are an error naming the key);
//   - every duration, size, signal, cron spec and address parsed;
//   - app names match [a-z0-9][a-z0-9-]* and no listen address is used twice;
//   - relative paths were made absolute against the config file's directory
//     (the working directory when there is no file).
//
// Every error names the offending key, in dotted form: "apps.hello.health.timeout: ...".
package config
