package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Sentinel errors of this package.
var (
	// ErrUnknownKey means the file or the environment names a key the schema lacks.
	ErrUnknownKey = errors.New("unknown config key")
	// ErrBadEnv means an environment override could not be applied.
	ErrBadEnv = errors.New("bad environment override")
)

// Load reads the YAML file at path (which may be absent when env supplies
// everything), applies the RECORDER_ environment overrides from environ
// (os.Environ() format) and returns the result. It does not validate; call
// Validate for that.
func Load(path string, environ []string) (*Config, error) {
	cfg := Default()
	data, err := os.ReadFile(path)
	if err != nil && !(errors.Is(err, os.ErrNotExist) && hasEnvConfig(environ)) {
		return nil, fmt.Errorf("failed to read config file: %w", err)
	}
	if len(bytes.TrimSpace(data)) > 0 {
		if err = Parse(data, cfg); err != nil {
			return nil, err
		}
	}
	if err = ApplyEnv(cfg, environ); err != nil {
		return nil, err
	}
	return cfg, nil
}

func hasEnvConfig(environ []string) bool {
	for _, kv := range environ {
		if strings.HasPrefix(kv, EnvPrefix) {
			return true
		}
	}
	return false
}

// Parse decodes YAML into cfg, refusing keys the schema does not have and naming
// them by their full dotted path.
func Parse(data []byte, cfg *Config) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return fmt.Errorf("failed to parse config YAML: %w", err)
	}
	if len(root.Content) == 0 {
		return nil
	}
	if err := checkKnown(root.Content[0], reflect.TypeOf(cfg).Elem(), ""); err != nil {
		return err
	}
	if err := root.Content[0].Decode(cfg); err != nil {
		return fmt.Errorf("failed to decode config: %w", err)
	}
	return nil
}

func checkKnown(node *yaml.Node, typ reflect.Type, path string) error {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	switch typ.Kind() {
	case reflect.Struct:
		if node.Kind != yaml.MappingNode {
			if node.Kind == yaml.ScalarNode && node.Tag == "!!null" {
				return nil
			}
			return &FieldError{Key: displayPath(path), Reason: "must be a mapping"}
		}
		for i := 0; i+1 < len(node.Content); i += 2 {
			key := node.Content[i].Value
			field, ok := fieldByTag(typ, key)
			if !ok {
				return fmt.Errorf("%w: %s (line %d)", ErrUnknownKey, joinPath(path, key), node.Content[i].Line)
			}
			if err := checkKnown(node.Content[i+1], field.Type, joinPath(path, key)); err != nil {
				return err
			}
		}
	case reflect.Map:
		if node.Kind != yaml.MappingNode {
			if node.Kind == yaml.ScalarNode && node.Tag == "!!null" {
				return nil
			}
			return &FieldError{Key: displayPath(path), Reason: "must be a mapping"}
		}
		for i := 0; i+1 < len(node.Content); i += 2 {
			if err := checkKnown(node.Content[i+1], typ.Elem(), joinPath(path, node.Content[i].Value)); err != nil {
				return err
			}
		}
	}
	return nil
}

func displayPath(path string) string {
	if path == "" {
		return "(root)"
	}
	return path
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func fieldByTag(typ reflect.Type, key string) (reflect.StructField, bool) {
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		if yamlName(f) == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}

// ApplyEnv applies RECORDER_* variables to cfg. Nesting uses "__"
// (RECORDER_APPSERVICE__BOT__USERNAME); a _FILE suffix reads the value from a
// file; lists are comma-separated and maps are "key=value,key=value".
func ApplyEnv(cfg *Config, environ []string) error {
	// Sort so the result does not depend on environment order (X then X_FILE).
	sorted := append([]string(nil), environ...)
	sort.Strings(sorted)
	for _, kv := range sorted {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		if err := applyOne(cfg, name, value); err != nil {
			return err
		}
	}
	return nil
}

func applyOne(cfg *Config, name, value string) error {
	keyPart := strings.ToLower(strings.TrimPrefix(name, EnvPrefix))
	path := strings.Split(keyPart, "__")
	target, err := lookupField(reflect.ValueOf(cfg).Elem(), path)
	if err != nil && strings.HasSuffix(keyPart, "_file") {
		path = strings.Split(strings.TrimSuffix(keyPart, "_file"), "__")
		var fileErr error
		target, fileErr = lookupField(reflect.ValueOf(cfg).Elem(), path)
		if fileErr == nil {
			data, readErr := os.ReadFile(value)
			if readErr != nil {
				return fmt.Errorf("%w: %s: failed to read secret file: %w", ErrBadEnv, name, readErr)
			}
			value = strings.TrimSpace(string(data))
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %s names no config key (%w)", ErrBadEnv, name, err)
	}
	if err = setValue(target, value); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadEnv, name, err)
	}
	return nil
}

func lookupField(v reflect.Value, path []string) (reflect.Value, error) {
	for i, part := range path {
		if v.Kind() != reflect.Struct {
			return reflect.Value{}, fmt.Errorf("%w: %s", ErrUnknownKey, strings.Join(path[:i+1], "."))
		}
		f, ok := fieldByTag(v.Type(), part)
		if !ok {
			return reflect.Value{}, fmt.Errorf("%w: %s", ErrUnknownKey, strings.Join(path[:i+1], "."))
		}
		v = v.FieldByIndex(f.Index)
	}
	return v, nil
}

func setValue(v reflect.Value, value string) error {
	switch v.Kind() {
	case reflect.String:
		v.SetString(value)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
		if err != nil {
			return fmt.Errorf("not an integer: %q", value)
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(strings.TrimSpace(value), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("not an unsigned integer in range: %q", value)
		}
		v.SetUint(n)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(value))
		if err != nil {
			return fmt.Errorf("not a boolean: %q", value)
		}
		v.SetBool(b)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("unsupported list type %s", v.Type())
		}
		items := splitList(value)
		list := reflect.MakeSlice(v.Type(), len(items), len(items))
		for i, item := range items {
			list.Index(i).SetString(item)
		}
		v.Set(list)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for _, item := range splitList(value) {
			k, val, ok := strings.Cut(item, "=")
			if !ok {
				return fmt.Errorf("map entry %q is not key=value", item)
			}
			m.SetMapIndex(reflect.ValueOf(strings.TrimSpace(k)).Convert(v.Type().Key()),
				reflect.ValueOf(strings.TrimSpace(val)).Convert(v.Type().Elem()))
		}
		v.Set(m)
	default:
		return fmt.Errorf("a %s cannot be set from the environment", v.Kind())
	}
	return nil
}

func splitList(value string) []string {
	var out []string
	for _, item := range strings.Split(value, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
