package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// SearchPaths are tried in order when no file is named.
var SearchPaths = []string{"deployer.yaml", "/etc/deployer/deployer.yaml"}

// EnvPrefix prefixes every environment override: DEPLOYER_GIT_HTTP_LISTEN.
const EnvPrefix = "DEPLOYER"

// Find returns the config file to use: file if set, else the first of
// SearchPaths that exists, else "" (built-in defaults).
func Find(file string) string {
	if file != "" {
		return file
	}
	for _, p := range SearchPaths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// Load reads file (or, if "", the first of SearchPaths that exists, or
// nothing), applies environment overrides and validates the result.
func Load(file string) (*Config, error) {
	file = Find(file)
	v := viper.New()
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_", "-", "_"))
	v.AutomaticEnv()
	setDefaults(v, "", Default(), false)

	var raw map[string]any
	if file != "" {
		v.SetConfigFile(file)
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("config %s: %w", file, oneLine(err))
		}
		var err error
		if raw, err = readRaw(file); err != nil {
			return nil, fmt.Errorf("config %s: %w", file, oneLine(err))
		}
	}
	rawApps, err := appsOf(raw)
	if err != nil {
		return nil, err
	}
	for name := range rawApps {
		setDefaults(v, "apps."+name, DefaultApp(name), true)
	}
	if err := checkKnown(append(v.AllKeys(), flatten("", raw)...), rawApps); err != nil {
		return nil, err
	}

	cfg := Default()
	cfg.Apps = nil
	dec := viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		byteSizeHook,
		mapstructure.StringToSliceHookFunc(","),
	))
	if err := v.Unmarshal(cfg, dec); err != nil {
		return nil, decodeError(err)
	}
	if cfg.Apps == nil {
		cfg.Apps = map[string]*App{}
	}
	cfg.File = file
	for name, app := range cfg.Apps {
		app.Name = name
		// viper lower-cases map keys; environment variable names are
		// case-sensitive, so env comes from the file as written.
		app.Env = envOf(rawApps[name])
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// setDefaults registers every field of a struct as a viper default, so that
// environment overrides reach keys the file did not mention.
func setDefaults(v *viper.Viper, prefix string, s any, leaves bool) {
	rv := reflect.Indirect(reflect.ValueOf(s))
	rt := rv.Type()
	for i := 0; i < rt.NumField(); i++ {
		tag := rt.Field(i).Tag.Get("mapstructure")
		if tag == "" || tag == "-" {
			continue
		}
		key := tag
		if prefix != "" {
			key = prefix + "." + tag
		}
		f := rv.Field(i)
		switch {
		case f.Kind() == reflect.Struct && f.Type().String() != "time.Duration":
			setDefaults(v, key, f.Interface(), leaves)
		case f.Kind() == reflect.Map:
			if key == "apps" {
				continue
			}
			v.SetDefault(key, map[string]any{})
		case f.Type() == reflect.TypeOf(ByteSize(0)):
			v.SetDefault(key, ByteSize(f.Int()).String())
		default:
			v.SetDefault(key, f.Interface())
		}
	}
}

// knownKeys lists the dotted keys of a struct type.
func knownKeys(prefix string, t reflect.Type, out map[string]bool) {
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("mapstructure")
		if tag == "" || tag == "-" {
			continue
		}
		key := tag
		if prefix != "" {
			key = prefix + "." + tag
		}
		ft := t.Field(i).Type
		if ft.Kind() == reflect.Struct && ft.String() != "time.Duration" {
			knownKeys(key, ft, out)
			continue
		}
		out[key] = true
	}
}

func checkKnown(keys []string, rawApps map[string]map[string]any) error {
	top := map[string]bool{}
	knownKeys("", reflect.TypeOf(Config{}), top)
	app := map[string]bool{}
	knownKeys("", reflect.TypeOf(App{}), app)
	sort.Strings(keys)
	for _, k := range keys {
		if top[k] {
			continue
		}
		if rest, ok := strings.CutPrefix(k, "apps."); ok {
			name, sub, _ := strings.Cut(rest, ".")
			if _, ok := rawApps[name]; ok && (sub == "" || app[sub] || sub == "env" || strings.HasPrefix(sub, "env.")) {
				continue
			}
			if _, ok := rawApps[name]; !ok {
				continue // reported by appsOf, or an override of an app the file lacks
			}
		}
		return fmt.Errorf("%s: unknown key", k)
	}
	return nil
}

// flatten lists the dotted keys of a raw config, empty maps included.
func flatten(prefix string, m map[string]any) []string {
	var out []string
	for k, v := range m {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok && len(sub) > 0 {
			out = append(out, flatten(key, sub)...)
			continue
		}
		out = append(out, key)
	}
	return out
}

func readRaw(file string) (map[string]any, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	switch strings.ToLower(filepath.Ext(file)) {
	case ".toml":
		err = toml.Unmarshal(b, &m)
	case ".json":
		err = json.Unmarshal(b, &m)
	default:
		err = yaml.Unmarshal(b, &m)
	}
	return m, err
}

var appNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// appsOf returns the apps section of the raw file, keyed by name as written.
func appsOf(raw map[string]any) (map[string]map[string]any, error) {
	out := map[string]map[string]any{}
	a, ok := raw["apps"]
	if !ok || a == nil {
		return out, nil
	}
	apps, ok := a.(map[string]any)
	if !ok {
		return nil, errors.New("apps: must be a map of app name to settings")
	}
	for name, s := range apps {
		if !appNameRE.MatchString(name) {
			return nil, fmt.Errorf("apps.%s: app name must match [a-z0-9][a-z0-9-]*", name)
		}
		m, _ := s.(map[string]any)
		if s != nil && m == nil {
			return nil, fmt.Errorf("apps.%s: must be a map of settings", name)
		}
		out[name] = m
	}
	return out, nil
}

func envOf(app map[string]any) map[string]string {
	out := map[string]string{}
	env, _ := app["env"].(map[string]any)
	for k, v := range env {
		out[k] = fmt.Sprint(v)
	}
	return out
}

var fieldRE = regexp.MustCompile(`'([^']*)'`)

// decodeError turns mapstructure's multi-line report into one line with dotted keys.
func decodeError(err error) error {
	var lines []string
	for _, l := range strings.Split(err.Error(), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "decoding failed") || strings.HasSuffix(l, "error(s) decoding:") {
			continue
		}
		l = strings.TrimPrefix(l, "* ")
		l = fieldRE.ReplaceAllStringFunc(l, func(s string) string {
			s = strings.Trim(s, "'")
			s = strings.NewReplacer("[", ".", "]", "").Replace(s)
			return s + ":"
		})
		lines = append(lines, l)
	}
	if len(lines) == 0 {
		return err
	}
	return errors.New(strings.Join(lines, "; "))
}

func oneLine(err error) error {
	return errors.New(strings.Join(strings.Fields(err.Error()), " "))
}
