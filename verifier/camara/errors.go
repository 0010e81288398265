package camara

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// ErrorInfo is the CAMARA error body: {status, code, message}.
type ErrorInfo struct {
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// apiError is an error the handler answers with; its fields are the body.
type apiError ErrorInfo

func (e *apiError) Error() string { return strconv.Itoa(e.Status) + " " + e.Code + ": " + e.Message }

func newErr(status int, code, msg string) *apiError {
	return &apiError{Status: status, Code: code, Message: msg}
}

// The errors of the Commonalities catalogue and of the API, with the
// messages of the specs' examples.
var (
	errInvalidArgument = func(msg string) *apiError { return newErr(400, "INVALID_ARGUMENT", msg) }
	errOutOfRange      = func(msg string) *apiError { return newErr(400, "OUT_OF_RANGE", msg) }

	errUnauthenticated = newErr(401, "UNAUTHENTICATED",
		"Request not authenticated due to missing, invalid, or expired credentials.")
	errPermissionDenied = newErr(403, "PERMISSION_DENIED",
		"Client does not have sufficient permissions to perform this action.")
	errNotFound           = newErr(404, "NOT_FOUND", "The specified resource is not found.")
	errIdentifierNotFound = newErr(404, "IDENTIFIER_NOT_FOUND", "Device identifier not found.")
	errMethodNotAllowed   = newErr(405, "METHOD_NOT_ALLOWED",
		"The requested method is not allowed/supported on the target resource.")
	errUnsupportedMedia = newErr(415, "UNSUPPORTED_MEDIA_TYPE",
		"The server refuses to accept the request because the payload format is in an unsupported format.")
	errMissingIdentifier = newErr(422, "MISSING_IDENTIFIER", "The device cannot be identified.")
	errUnsupportedIdent  = newErr(422, "UNSUPPORTED_IDENTIFIER",
		"None of the provided identifiers is supported by the implementation.")
	errUnnecessaryIdent = newErr(422, "UNNECESSARY_IDENTIFIER",
		"An explicit identifier has been provided for the device when this is already identified by the access token")
	errUnnecessaryUnbindIMEI = newErr(422, "UNNECESSARY_UNBIND_IMEI", "The current device imei has been unbound")
	errUnnecessaryUnbindArea = newErr(422, "UNNECESSARY_UNBIND_AREALIMIT", "The current device area limit has been unbound")
	errQuotaExceeded         = newErr(429, "QUOTA_EXCEEDED", "Rejected due to exceeding a business quota limit.")
	errTooManyRequests       = newErr(429, "TOO_MANY_REQUESTS", "Rejected due to request rate limit overpassed.")
	errInternal              = newErr(500, "INTERNAL", "Unknown server error. Typically a server bug.")
)

// writeJSON writes a JSON body; the x-correlator header is set earlier.
func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status, data = 500, []byte(`{"status":500,"code":"INTERNAL","message":"Unknown server error. Typically a server bug."}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cardbind"`)
	}
	writeJSON(w, e.Status, ErrorInfo(*e))
}
