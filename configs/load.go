package configs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"strings"
)

// MaxFileBytes bounds the size of a config file Load reads.
const MaxFileBytes = 16 << 20

// Warning is a non-fatal finding, e.g. an unknown key. For a key in the file,
// File is the path given to Load and Key the key path ("gateway.pong_timout",
// "apps[0].scret"); for an unknown HERALD_* variable, File is "env" and Key
// the variable's name; for a key inside HERALD_APPS, File is
// "env HERALD_APPS".
type Warning struct {
	File    string
	Key     string
	Message string
	Line    int // line in File, 0 if none
}

// String formats w as `<file>: <key>: <message>`.
func (w Warning) String() string {
	return w.File + ": " + w.Key + ": " + w.Message
}

// LoadOptions varies one call of Load.
type LoadOptions struct {
	// Strict makes unknown keys (in the file and in HERALD_APPS) and unknown
	// HERALD_* variables errors instead of warnings.
	Strict bool
	// Env is the environment in os.Environ form; nil means no env overrides.
	Env []string
	// IgnoreEnv names HERALD_* variables the caller handles itself (such as
	// one naming the config file); they are not reported as unknown.
	IgnoreEnv []string
}

// KeyError is a problem with the value of one key. Validate returns one;
// Load wraps it with the file or variable the value came from.
type KeyError struct {
	Key     string // key path, e.g. "apps[1].key"; "" for the whole document
	Problem string // e.g. "must not be empty"
}

func (e *KeyError) Error() string {
	if e.Key == "" {
		return e.Problem
	}
	return e.Key + ": " + e.Problem
}

func keyErr(key, problem string) *KeyError { return &KeyError{Key: key, Problem: problem} }

// Load reads the YAML file at path (path "" means no file: start from
// Default()), applies defaults to missing keys, then the HERALD_* overrides
// in opts.Env, then validates.
//
// Errors name their origin and the key:
//
//	config herald.yaml: apps[1].key: must not be empty
//	config herald.yaml: gateway.activity_timeout: "abc" is not a duration (...)
//	config herald.yaml: line 3: did not find expected key
//	env HERALD_LISTEN: listen: "nope" must be host:port (...)
//
// If the file sets apps, its list replaces the dev app; each listed app
// starts from app.New's per-app defaults. Unknown keys and variables are
// returned as warnings (errors with opts.Strict). The warnings are returned
// with the error too. On error the *Config is nil.
func Load(path string, opts LoadOptions) (*Config, []Warning, error) {
	c := Default()
	sources := make(map[string]string) // key path -> "env HERALD_X"
	origin := "config"
	var warnings []Warning

	if path != "" {
		origin = "config " + path
		data, err := readFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", origin, err)
		}
		w, err := decodeFile(c, path, data)
		warnings = append(warnings, w...)
		if err != nil {
			return nil, warnings, fmt.Errorf("%s: %w", origin, err)
		}
	}

	w, err := applyEnv(c, opts.Env, opts.IgnoreEnv, sources)
	warnings = append(warnings, w...)
	if err != nil {
		return nil, warnings, err
	}

	if opts.Strict && len(warnings) > 0 {
		errs := make([]error, len(warnings))
		for i, w := range warnings {
			errs[i] = strictError(path, w)
		}
		return nil, warnings, errors.Join(errs...)
	}

	if err := c.Validate(); err != nil {
		var ke *KeyError
		if errors.As(err, &ke) {
			return nil, warnings, fmt.Errorf("%s: %w", sourceOf(ke.Key, sources, origin), err)
		}
		return nil, warnings, fmt.Errorf("%s: %w", origin, err)
	}
	return c, warnings, nil
}

// readFile reads at most MaxFileBytes of path. Errors omit the path (the
// caller prefixes it) but still match fs.ErrNotExist and friends.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, unwrapPath(err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, unwrapPath(err)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("file is larger than %d bytes", MaxFileBytes)
	}
	return data, nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

// decodeFile applies the YAML document data (from file) to c.
func decodeFile(c *Config, file string, data []byte) ([]Warning, error) {
	root, err := parseYAML(data)
	if err != nil || root == nil {
		return nil, err
	}
	d := decoder{file: file}
	err = d.decode(root, reflect.ValueOf(c).Elem(), "", 0)
	return d.unknown, err
}

// strictError turns an unknown-key warning into the error Strict reports.
func strictError(path string, w Warning) error {
	switch {
	case path != "" && w.File == path:
		return fmt.Errorf("config %s: %s: %s", w.File, w.Key, w.Message)
	case w.File == "env":
		return fmt.Errorf("env %s: %s", w.Key, w.Message)
	}
	return fmt.Errorf("%s: %s: %s", w.File, w.Key, w.Message)
}

// sourceOf names where key got its value: the variable recorded for it or
// for its nearest recorded parent ("apps[1].key" -> "apps[1]" -> "apps"),
// else origin (the file, or plain "config" when defaults apply).
func sourceOf(key string, sources map[string]string, origin string) string {
	for k := key; k != ""; {
		if s, ok := sources[k]; ok {
			return s
		}
		i := strings.LastIndexAny(k, ".[")
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return origin
}
