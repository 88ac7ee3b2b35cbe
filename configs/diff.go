package configs

import (
	"reflect"
	"strings"
)

// Diff lists the keys whose values differ between two configs, as key
// paths in file order ("gateway.pong_timeout", "cluster.seeds"). Blocks are
// walked key by key; a list or mapping is one key, compared whole ("apps"
// is one entry: a reload compares apps by id itself). A hot reload uses it
// to say which keys it could not apply (node/reload.go).
func Diff(a, b *Config) []string {
	var out []string
	diffValue(reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem(), "", &out)
	return out
}

func diffValue(a, b reflect.Value, path string, out *[]string) {
	if a.Kind() != reflect.Struct || a.Type() == durationType {
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			*out = append(*out, path)
		}
		return
	}
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		diffValue(a.Field(i), b.Field(i), joinKey(path, name), out)
	}
}
