package configs

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"herald/app"
)

// The decoder walks a yaml.Node tree against a struct's yaml tags by
// reflection. Doing the walk ourselves (instead of yaml's Decode) gives every
// error the key path it belongs to, finds unknown keys in the same pass, and
// lets list elements (apps) start from their defaults.

// Limits on the walk, so that alias and merge-key tricks cannot make a small
// document cost unbounded time or stack.
const (
	maxDecodeDepth = 64
	maxDecodeSteps = 1 << 20
)

var errTooComplex = errors.New("document too complex (aliases or merge keys nest too deep)")

var durationType = reflect.TypeFor[Duration]()

// decoder holds the state of one walk. It is not safe for concurrent use.
type decoder struct {
	file    string    // Warning.File for unknown keys
	unknown []Warning // unknown keys, in document order
	steps   int
}

// parseYAML parses one YAML document. It returns nil for an empty document.
func parseYAML(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, nil
		}
		return nil, yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		if err != nil {
			return nil, yamlError(err)
		}
		return nil, fmt.Errorf("line %d: a second YAML document is not allowed", extra.Line)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, nil
		}
		root = root.Content[0]
	}
	return root, nil
}

// yamlError drops the "yaml: " prefix, leaving e.g. "line 3: did not find
// expected key".
func yamlError(err error) error {
	return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
}

// decode sets v (addressable) from n. Keys absent from n keep v's current
// value, so v should hold the defaults. path is the key path of v ("" for the
// root), used in errors and warnings.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string, depth int) error {
	d.steps++
	if d.steps > maxDecodeSteps || depth > maxDecodeDepth {
		return errTooComplex
	}
	for n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return keyErr(path, "alias without a target")
		}
		n = n.Alias
		depth++
		if depth > maxDecodeDepth {
			return errTooComplex
		}
	}
	if isNull(n) {
		return nil // an empty value keeps the default
	}
	t := v.Type()
	switch {
	case isLeaf(t):
		if n.Kind != yaml.ScalarNode {
			return keyErr(path, fmt.Sprintf("must be %s, got %s", typeName(t), kindName(n)))
		}
		if err := setScalar(v, n.Value); err != nil {
			return keyErr(path, err.Error())
		}
		return nil
	case t.Kind() == reflect.Struct:
		return d.decodeStruct(n, v, path, depth)
	case t.Kind() == reflect.Slice:
		return d.decodeSlice(n, v, path, depth)
	case t.Kind() == reflect.Map && t.Key().Kind() == reflect.String && isLeaf(t.Elem()):
		return d.decodeMap(n, v, path)
	}
	return keyErr(path, fmt.Sprintf("unsupported field type %s", t))
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string, depth int) error {
	if n.Kind != yaml.MappingNode {
		if path == "" {
			return keyErr(path, "the top level must be a mapping of keys, got "+kindName(n))
		}
		return keyErr(path, "must be a mapping, got "+kindName(n))
	}
	fields := yamlFields(v.Type())
	// Merge keys (<<) first, so that explicit keys override what they bring.
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if !isMergeKey(k) {
			continue
		}
		if err := d.decodeMerge(val, v, path, depth+1); err != nil {
			return err
		}
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if isMergeKey(k) {
			continue
		}
		if k.Kind != yaml.ScalarNode {
			return keyErr(path, fmt.Sprintf("line %d: keys must be plain strings, got %s", k.Line, kindName(k)))
		}
		p := joinKey(path, k.Value)
		if line, dup := seen[k.Value]; dup {
			return keyErr(p, fmt.Sprintf("defined twice (lines %d and %d)", line, k.Line))
		}
		seen[k.Value] = k.Line
		f, ok := fields[k.Value]
		if !ok {
			msg := fmt.Sprintf("unknown key (line %d)", k.Line)
			if s := closest(k.Value, mapKeys(fields)); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			d.unknown = append(d.unknown, Warning{File: d.file, Key: p, Line: k.Line, Message: msg})
			continue
		}
		if err := d.decode(val, v.FieldByIndex(f.Index), p, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// decodeMerge applies the value of a "<<" key: a mapping, or a list of
// mappings where earlier ones win.
func (d *decoder) decodeMerge(n *yaml.Node, v reflect.Value, path string, depth int) error {
	for n.Kind == yaml.AliasNode && n.Alias != nil && depth <= maxDecodeDepth {
		n, depth = n.Alias, depth+1
	}
	if n.Kind == yaml.SequenceNode {
		for i := len(n.Content) - 1; i >= 0; i-- {
			if err := d.decode(n.Content[i], v, path, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return d.decode(n, v, path, depth+1)
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string, depth int) error {
	if n.Kind != yaml.SequenceNode {
		return keyErr(path, "must be a list, got "+kindName(n))
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		e := s.Index(i)
		if e.Type() == reflect.TypeFor[app.App]() {
			e.Set(reflect.ValueOf(app.New("", "", "")))
		}
		if err := d.decode(item, e, fmt.Sprintf("%s[%d]", path, i), depth+1); err != nil {
			return err
		}
	}
	v.Set(s)
	return nil
}

// decodeMap reads a mapping of names to scalars (apps[].webhooks[].headers).
// Its keys are data, not config keys: none is unknown.
func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		return keyErr(path, "must be a mapping, got "+kindName(n))
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		p := joinKey(path, k.Value)
		if k.Kind != yaml.ScalarNode || val.Kind != yaml.ScalarNode {
			return keyErr(p, "must map a name to "+typeName(v.Type().Elem()))
		}
		if m.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
			return keyErr(p, fmt.Sprintf("defined twice (line %d)", k.Line))
		}
		e := reflect.New(v.Type().Elem()).Elem()
		if err := setScalar(e, val.Value); err != nil {
			return keyErr(p, err.Error())
		}
		m.SetMapIndex(reflect.ValueOf(k.Value), e)
	}
	v.Set(m)
	return nil
}

// setScalar parses s into the leaf v. Errors name the value, not the key.
func setScalar(v reflect.Value, s string) error {
	t := v.Type()
	if t == durationType {
		d, err := ParseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		p := reflect.New(t.Elem())
		if err := setScalar(p.Elem(), s); err != nil {
			return err
		}
		v.Set(p)
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := parseBool(s)
		if err != nil {
			return err
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, t.Bits())
		if err != nil {
			return numErr(s, "an integer", err)
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, t.Bits())
		if err != nil {
			return numErr(s, "a non-negative integer", err)
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), t.Bits())
		if err != nil {
			return numErr(s, "a number", err)
		}
		v.SetFloat(f)
	default:
		return fmt.Errorf("unsupported field type %s", t)
	}
	return nil
}

func numErr(s, what string, err error) error {
	if errors.Is(err, strconv.ErrRange) {
		return fmt.Errorf("%s is out of range", quote(s))
	}
	return fmt.Errorf("%s is not %s", quote(s), what)
}

// parseBool accepts true/false/1/0, in any letter case.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, fmt.Errorf("%s is not a boolean (use true or false)", quote(s))
}

// quote quotes a value for an error message, cut to a readable length.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

// isLeaf reports whether t is read from a single scalar.
func isLeaf(t reflect.Type) bool {
	if t == durationType {
		return true
	}
	switch t.Kind() {
	case reflect.Pointer:
		return t.Elem().Kind() != reflect.Struct && isLeaf(t.Elem())
	case reflect.String, reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

// yamlFields maps the yaml key of each exported, tagged field of struct type t
// to the field.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	m := make(map[string]reflect.StructField, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if name := yamlName(f); name != "" {
			m[name] = f
		}
	}
	return m
}

// yamlName is the key of f in YAML, or "" if f is not read from YAML.
func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name
}

func joinKey(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func isNull(n *yaml.Node) bool {
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

func isMergeKey(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return quote(n.Value)
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	return "nothing"
}

func typeName(t reflect.Type) string {
	if t == durationType {
		return "a duration"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return typeName(t.Elem())
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "an integer"
}

// closest returns the known key nearest to k by edit distance, if it is near
// enough to be a likely typo.
func closest(k string, names []string) string {
	best, bestD := "", min(3, len(k)/3+1)
	for _, name := range names {
		if d := editDistance(k, name); d < bestD || (d == bestD && best != "" && name < best) {
			best, bestD = name, d
		}
	}
	return best
}

func mapKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// editDistance is the Levenshtein distance between a and b, capped for long
// inputs (keys longer than 64 bytes are never typos of ours).
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
