// Package web serves the operator HTTP API and the embedded web page.
//
// New builds the whole handler (API, health, metrics, page); Server runs it
// on its own listener (config api.listen) with graceful shutdown:
//
//	h := web.New(web.Options{Recordings: web.StorageRecordings(db), Files: store, Calls: adapter,
//		Tokens: cfg.API.Tokens, Ready: checks, Metrics: m})
//	srv := web.NewServer(cfg.API.Listen, h)
//	err := srv.Start(ctx) // binds now, serves in the background, logs with ctx's logger
//	...
//	err = srv.Stop(shutdownCtx)
//
// The handler can also be mounted elsewhere (it is a *chi.Mux). web never
// imports callbot: the wiring gives it an adapter to the Calls interface
// defined here, which maps the call bot's errors to ErrAlreadyRecording,
// ErrNoCall, ErrNotRecording and ErrForbidden.
//
// Decisions worth knowing:
//
//   - Authentication: every /api/v1 route except /api/v1/openapi.json needs
//     "Authorization: Bearer <token>" with one of api.tokens, compared as
//     SHA-256 digests in constant time against all of them. With no tokens
//     configured the API refuses everything. /metrics needs a token too
//     unless Options.PublicMetrics. /, /static/*, /healthz and /readyz need
//     none; /readyz then says only ready or not, and gives the failed checks
//     with their errors to callers with a token.
//   - Host: a request whose Host is not an IP literal, localhost or one of
//     Options.AllowedHosts gets 421 (DNS rebinding: a page on another
//     domain pointed at this address must not reach the API).
//   - Metrics labels never take raw client input: the route pattern, the
//     method (unknown methods are "other") and the status code.
//   - Media in the page: the page fetches files with the Authorization
//     header and plays them from blob: URLs. There is no ?access_token=
//     parameter, so tokens never end up in access logs or browser history.
//     The cost: a file is downloaded whole before it plays.
//   - The file route only serves names that the recording lists in its file
//     rows, plus manifest.json. A name that is not one safe path component
//     after URL-decoding (../, %2e%2e%2f, ..%2f, %2f..., backslashes, NUL)
//     is 400, an unlisted one 404, before the file store is asked.
//   - A track's "kind" is the media kind, "audio" or "video" (video when it
//     has a video codec); its container (the file row's kind) is "container".
//     "codec" is the first of "codecs" (the video one for video files).
//   - Cursors are opaque base64url strings naming the last recording of a
//     page (keyset on started_at, id), so pages do not shift when recordings
//     start meanwhile; limit defaults to 50 and is capped at 500.
//   - Joining and leaving calls run detached from the request's
//     cancellation (bounded by a timeout), so a client that goes away does
//     not leave a half-joined call.
//   - Request bodies are limited to MaxBodyBytes (64 KiB): larger ones get 413.
//   - Every response has X-Request-Id; 500s name it and log the cause with it.
//     A client's X-Request-Id is kept when it is at most 64 characters of
//     letters, digits, '.', '_' and '-'; otherwise the request gets a fresh id.
package web
