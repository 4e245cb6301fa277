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
	"time"

	"gopkg.in/yaml.v3"
)

// Sentinel errors of this package.
var (
	// ErrUnknownKey means the file names a key the schema lacks (fatal), or
	// an environment variable does (only a warning, see ApplyEnv).
	ErrUnknownKey = errors.New("unknown config key")
	// ErrBadEnv means an environment override could not be applied.
	ErrBadEnv = errors.New("bad environment override")
)

// Load reads the YAML file at path (which may be absent when env supplies
// everything), applies the RECORDER_ environment overrides from environ
// (os.Environ() format) and returns the result. RECORDER_ variables that name
// no config key are ignored (Kubernetes injects RECORDER_PORT and friends for a
// Service named "recorder"); LoadWithWarnings reports them. It does not
// validate; call Validate for that.
func Load(path string, environ []string) (*Config, error) {
	cfg, _, err := LoadWithWarnings(path, environ)
	return cfg, err
}

// LoadWithWarnings is Load that also returns the RECORDER_ variables it
// ignored because they name no config key, for the caller to log once it has
// a logger. Unknown keys in the file stay an error.
func LoadWithWarnings(path string, environ []string) (*Config, []EnvWarning, error) {
	cfg := Default()
	data, err := os.ReadFile(path)
	if err != nil && !(errors.Is(err, os.ErrNotExist) && hasEnvConfig(environ)) {
		return nil, nil, fmt.Errorf("failed to read config file: %w", err)
	}
	if len(bytes.TrimSpace(data)) > 0 {
		if err = Parse(data, cfg); err != nil {
			return nil, nil, err
		}
	}
	warnings, err := ApplyEnv(cfg, environ)
	if err != nil {
		return nil, nil, err
	}
	return cfg, warnings, nil
}

// hasEnvConfig says whether environ sets at least one config key, so that a
// missing file is not an error. Variables naming no key do not count.
func hasEnvConfig(environ []string) bool {
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix) && envKeyExists(name) {
			return true
		}
	}
	return false
}

func envKeyExists(name string) bool {
	keyPart := strings.ToLower(strings.TrimPrefix(name, EnvPrefix))
	cfg := reflect.New(reflect.TypeOf(Config{})).Elem()
	if _, err := lookupField(cfg, strings.Split(keyPart, "__")); err == nil {
		return true
	}
	if base, ok := strings.CutSuffix(keyPart, "_file"); ok {
		_, err := lookupField(cfg, strings.Split(base, "__"))
		return err == nil
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

// EnvWarning is a RECORDER_ environment variable that names no config key
// and was ignored.
type EnvWarning struct {
	Name string // the variable's name; its value is never kept (it may be a secret)
	// DidYouMean is the closest variable name that does name a key, if one
	// is close enough to be a likely typo.
	DidYouMean string
}

func (ew EnvWarning) String() string {
	if ew.DidYouMean != "" {
		return ew.Name + " names no config key (did you mean " + ew.DidYouMean + "?)"
	}
	return ew.Name + " names no config key"
}

// ApplyEnv applies RECORDER_* variables to cfg. Nesting uses "__"
// (RECORDER_APPSERVICE__BOT__USERNAME); a _FILE suffix reads the value from a
// file; lists are comma-separated and maps are "key=value,key=value".
// Variables that name no config key are returned as warnings, never an
// error: an orchestrator may set variables with our prefix (Kubernetes sets
// RECORDER_PORT, RECORDER_SERVICE_HOST, ... for a Service named "recorder").
// A bad value for a key that exists is an error.
func ApplyEnv(cfg *Config, environ []string) ([]EnvWarning, error) {
	// Sort so the result does not depend on environment order (X then X_FILE).
	sorted := append([]string(nil), environ...)
	sort.Strings(sorted)
	var warnings []EnvWarning
	for _, kv := range sorted {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		err := applyOne(cfg, name, value)
		if errors.Is(err, ErrUnknownKey) {
			warnings = append(warnings, EnvWarning{Name: name, DidYouMean: suggestEnv(name)})
		} else if err != nil {
			return warnings, err
		}
	}
	return warnings, nil
}

// applyOne sets the key name points at; the error wraps ErrUnknownKey when
// name points at no key and ErrBadEnv when the value does not fit.
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
		return fmt.Errorf("%s names no config key: %w", name, err)
	}
	if err = setValue(target, value); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadEnv, name, err)
	}
	return nil
}

// envNames lists the variable names of every key that can be set from the
// environment, e.g. RECORDER_HOMESERVER__ADDRESS.
func envNames(typ reflect.Type, prefix string) []string {
	var names []string
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		key := yamlName(f)
		if key == "" || key == "-" {
			continue
		}
		name := prefix + strings.ToUpper(key)
		if f.Type.Kind() == reflect.Struct {
			names = append(names, envNames(f.Type, name+"__")...)
		} else {
			names = append(names, name)
		}
	}
	return names
}

// suggestEnv returns the known variable closest to name when it is close
// enough to be a typo (a few edits, fewer for short names), else "".
func suggestEnv(name string) string {
	upper := strings.ToUpper(name)
	suffix := ""
	if base, ok := strings.CutSuffix(upper, "_FILE"); ok {
		upper, suffix = base, "_FILE"
	}
	key := strings.TrimPrefix(upper, EnvPrefix)
	limit := max(1, min(3, len(key)/4))
	best, bestDist := "", limit+1
	for _, candidate := range envNames(reflect.TypeOf(Config{}), EnvPrefix) {
		if d := editDistance(key, strings.TrimPrefix(candidate, EnvPrefix)); d < bestDist {
			best, bestDist = candidate, d
		}
	}
	if best == "" {
		return ""
	}
	return best + suffix
}

// editDistance is the Levenshtein distance of a and b in bytes.
func editDistance(a, b string) int {
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
	if v.Type() == reflect.TypeFor[time.Duration]() {
		d, err := time.ParseDuration(strings.TrimSpace(value))
		if err != nil {
			return fmt.Errorf("not a duration (e.g. 30s, 5m, 4h): %q", value)
		}
		v.SetInt(int64(d))
		return nil
	}
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
