package geo

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
)

// ImportPath is the admin API route of the cell table import: the body is
// the CSV, streamed.
const ImportPath = "POST /admin/v1/cells/import"

// maxRowErrors bounds how many malformed rows an import answer lists.
const maxRowErrors = 100

// ImportResult is the answer to an import: what it did and the first
// malformed rows (all of them are counted in Skipped).
type ImportResult struct {
	ImportStats
	Errors []RowError `json:"errors,omitempty"`
	// Error says why the import stopped early (the cells stored before
	// stay stored).
	Error string `json:"error,omitempty"`
}

// RowError is one malformed row of an import.
type RowError struct {
	Line  int    `json:"line"`
	Error string `json:"error"`
}

// ImportHandler serves ImportPath: it imports the request body (a CSV in
// the OpenCelliD layout) into the table and answers an ImportResult, with
// 200 when the whole file was read (malformed rows are skipped and
// listed) and 500 when the store failed on the way. The caller checks the
// operator's credential.
func (t *Table) ImportHandler(log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var res ImportResult
		bad := func(line int, err error) {
			if len(res.Errors) < maxRowErrors {
				res.Errors = append(res.Errors, RowError{Line: line, Error: err.Error()})
			}
		}
		st, err := t.Import(r.Context(), r.Body, bad)
		res.ImportStats = st
		status := http.StatusOK
		if err != nil {
			status = http.StatusInternalServerError
			res.Error = fmt.Sprintf("import stopped after line %d: %v", st.Rows, err)
			log.Error("cell table import stopped", "rows", st.Rows, "imported", st.Imported, "err", err)
		} else {
			log.Info("cell table imported", "rows", st.Rows, "imported", st.Imported, "skipped", st.Skipped)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(res)
	})
}
