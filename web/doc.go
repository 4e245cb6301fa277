// Package web serves the operator HTTP API and the web page.
package web
