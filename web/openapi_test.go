package web_test

import (
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/web"
)

// TestOpenAPIMatchesRouter walks the router and checks that every route and
// method is in openapi.json and that the document has nothing more.
func TestOpenAPIMatchesRouter(t *testing.T) {
	routes, ok := web.New(web.Options{}).(chi.Routes)
	require.True(t, ok, "web.New returns a chi router")

	inRouter := map[string]bool{}
	require.NoError(t, chi.Walk(routes, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		inRouter[strings.ToLower(method)+" "+openAPIPath(route)] = true
		return nil
	}))

	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	data, err := os.ReadFile("openapi.json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &doc))
	require.True(t, strings.HasPrefix(doc.OpenAPI, "3."), "an OpenAPI 3 document")

	inDoc := map[string]bool{}
	methods := map[string]bool{"get": true, "put": true, "post": true, "delete": true, "patch": true, "head": true, "options": true, "trace": true}
	for path, item := range doc.Paths {
		for key := range item {
			if methods[key] {
				inDoc[key+" "+path] = true
			}
		}
	}
	require.Equal(t, sortedKeys(inRouter), sortedKeys(inDoc), "openapi.json and the router disagree")

	// Every path parameter of the document is declared.
	param := regexp.MustCompile(`\{([^}]+)\}`)
	for path, item := range doc.Paths {
		declared := string(item["parameters"])
		for key, op := range item {
			if methods[key] {
				declared += string(op)
			}
		}
		for _, m := range param.FindAllStringSubmatch(path, -1) {
			require.True(t, strings.Contains(declared, `"name": "`+m[1]+`"`) || strings.Contains(declared, "RecordingID") && m[1] == "id",
				"path parameter %s of %s is declared", m[1], path)
		}
	}
}

// openAPIPath turns a chi route into an OpenAPI path: no trailing slash
// (chi reports mounted roots as "/x/"), and a catch-all becomes {path}.
func openAPIPath(route string) string {
	if strings.HasSuffix(route, "/*") {
		route = strings.TrimSuffix(route, "*") + "{path}"
	}
	if len(route) > 1 {
		route = strings.TrimSuffix(route, "/")
	}
	return route
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
