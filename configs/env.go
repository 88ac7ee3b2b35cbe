package configs

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"herald/app"
)

// Environment variable names. Every scalar leaf of Config also has one:
// EnvPrefix + the upper-cased key path joined with "_", derived from the yaml
// tags (gateway.activity_timeout is HERALD_GATEWAY_ACTIVITY_TIMEOUT). See
// EnvVars for the full list.
const (
	EnvPrefix = "HERALD_"
	// EnvApps holds a YAML or JSON list of app objects that replaces apps.
	EnvApps = "HERALD_APPS"
	// EnvAppPrefix + an app key (ID, KEY, SECRET, CLIENT_EVENTS, ...) sets
	// that field of the first app, creating it if there is none.
	EnvAppPrefix = "HERALD_APP_"
)

// EnvVar is one HERALD_* variable Load reads and the key it sets.
type EnvVar struct {
	Name string // e.g. HERALD_GATEWAY_ACTIVITY_TIMEOUT
	Key  string // e.g. gateway.activity_timeout, apps[0].key, apps
}

// envLeaf is a scalar field reachable from a root struct type.
type envLeaf struct {
	name  string // HERALD_...
	key   string // key path relative to the root
	index []int  // for reflect.Value.FieldByIndex from the root
}

var (
	configLeaves = collectLeaves(reflect.TypeFor[Config](), EnvPrefix, "", nil, nil)
	appLeaves    = collectLeaves(reflect.TypeFor[app.App](), EnvAppPrefix, "", nil, nil)
)

// collectLeaves lists the scalar leaves of struct type t, depth first in
// field order. Lists are skipped: they are set whole (HERALD_APPS).
func collectLeaves(t reflect.Type, envPrefix, keyPrefix string, index []int, out []envLeaf) []envLeaf {
	for i := range t.NumField() {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		idx := append(slices.Clone(index), i)
		key := joinKey(keyPrefix, name)
		env := envPrefix + strings.ToUpper(name)
		switch {
		case isLeaf(f.Type):
			out = append(out, envLeaf{name: env, key: key, index: idx})
		case f.Type.Kind() == reflect.Struct:
			out = collectLeaves(f.Type, env+"_", key, idx, out)
		}
	}
	return out
}

// EnvVars returns every HERALD_* variable Load reads, sorted by name.
func EnvVars() []EnvVar {
	vars := []EnvVar{{Name: EnvApps, Key: "apps"}}
	for _, l := range configLeaves {
		vars = append(vars, EnvVar{Name: l.name, Key: l.key})
	}
	for _, l := range appLeaves {
		vars = append(vars, EnvVar{Name: l.name, Key: "apps[0]." + l.key})
	}
	slices.SortFunc(vars, func(a, b EnvVar) int { return strings.Compare(a.Name, b.Name) })
	return vars
}

// applyEnv applies the HERALD_* entries of env (os.Environ form, later
// entries win) to c in a fixed order: HERALD_APPS, then HERALD_APP_*, then
// the other leaves. It records in sources which variable set each key.
// Unknown HERALD_* names that are not in ignore become warnings, as do
// unknown keys inside HERALD_APPS.
func applyEnv(c *Config, env, ignore []string, sources map[string]string) ([]Warning, error) {
	vals := make(map[string]string)
	for _, e := range env {
		name, val, ok := strings.Cut(e, "=")
		if ok && strings.HasPrefix(name, EnvPrefix) {
			vals[name] = val
		}
	}
	if len(vals) == 0 {
		return nil, nil
	}
	var warnings []Warning

	if v, ok := vals[EnvApps]; ok {
		w, err := applyEnvApps(c, v)
		if err != nil {
			return nil, err
		}
		warnings = append(warnings, w...)
		for k := range sources {
			if k == "apps" || strings.HasPrefix(k, "apps[") {
				delete(sources, k)
			}
		}
		sources["apps"] = "env " + EnvApps
	}

	for _, l := range appLeaves {
		v, ok := vals[l.name]
		if !ok {
			continue
		}
		if len(c.Apps) == 0 {
			c.Apps = append(c.Apps, app.New("", "", ""))
			sources["apps[0]"] = "env " + l.name
		}
		if err := setScalar(reflect.ValueOf(&c.Apps[0]).Elem().FieldByIndex(l.index), v); err != nil {
			return nil, fmt.Errorf("env %s: %w", l.name, err)
		}
		sources["apps[0]."+l.key] = "env " + l.name
	}

	root := reflect.ValueOf(c).Elem()
	for _, l := range configLeaves {
		v, ok := vals[l.name]
		if !ok {
			continue
		}
		if err := setScalar(root.FieldByIndex(l.index), v); err != nil {
			return nil, fmt.Errorf("env %s: %w", l.name, err)
		}
		sources[l.key] = "env " + l.name
	}

	known := make(map[string]bool)
	for _, v := range EnvVars() {
		known[v.Name] = true
	}
	var unknown []string
	for name := range vals {
		if !known[name] && !slices.Contains(ignore, name) {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	for _, name := range unknown {
		msg := "unknown variable"
		if s := closest(name, mapKeys(known)); s != "" {
			msg += "; did you mean " + s + "?"
		}
		warnings = append(warnings, Warning{File: "env", Key: name, Message: msg})
	}
	return warnings, nil
}

// applyEnvApps replaces c.Apps with the list in HERALD_APPS.
func applyEnvApps(c *Config, v string) ([]Warning, error) {
	root, err := parseYAML([]byte(v))
	if err != nil {
		return nil, fmt.Errorf("env %s: %w", EnvApps, err)
	}
	if root == nil || isNull(root) {
		return nil, fmt.Errorf("env %s: must be a YAML or JSON list of apps, got nothing", EnvApps)
	}
	d := decoder{file: "env " + EnvApps}
	var apps []app.App
	if err := d.decode(root, reflect.ValueOf(&apps).Elem(), "apps", 0); err != nil {
		return nil, fmt.Errorf("env %s: %w", EnvApps, err)
	}
	c.Apps = apps
	return d.unknown, nil
}
