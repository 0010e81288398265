package oauth

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/cardbind/cardbind/verifier"
)

// AdminHandler serves the operator's client and token administration.
// Operator authentication is the mounting code's job. Routes:
//
//	POST   /admin/v1/clients        {tenant, scopes[], rate?, quota?, name?}
//	                                → 201 {client_id, client_secret, tenant, scopes, rate, quota, created}
//	                                  (the secret is shown only here)
//	GET    /admin/v1/clients        → 200 {clients: [...]} (no secrets)
//	GET    /admin/v1/clients/{id}   → 200 client | 404
//	DELETE /admin/v1/clients/{id}   → 204 | 404 (its tokens stop working within ClientCacheTTL)
//	POST   /admin/v1/tokens         {client_id, phone_number, scopes[]?, ttl? ("30s")}
//	                                → 201 {access_token, token_type, expires_in, scope}
//
// rate is in requests per second (ParseRate turns "100/s" into it). Errors
// are {"error": "..."} with 400 (invalid), 404 (unknown client or tenant)
// or 500.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /admin/v1/clients", s.adminCreateClient)
	mux.HandleFunc("GET /admin/v1/clients", s.adminListClients)
	mux.HandleFunc("GET /admin/v1/clients/{id}", s.adminGetClient)
	mux.HandleFunc("DELETE /admin/v1/clients/{id}", s.adminDeleteClient)
	mux.HandleFunc("POST /admin/v1/tokens", s.adminMintToken)
	return mux
}

// ClientView is a client as the admin API shows it.
type ClientView struct {
	ID      string    `json:"client_id"`
	Secret  string    `json:"client_secret,omitempty"`
	Name    string    `json:"name,omitempty"`
	Tenant  string    `json:"tenant"`
	Scopes  []string  `json:"scopes"`
	Rate    float64   `json:"rate"`
	Quota   int64     `json:"quota"`
	Created time.Time `json:"created"`
}

func view(c *Client, secret string) ClientView {
	return ClientView{ID: c.ID, Secret: secret, Name: c.Name, Tenant: c.Tenant, Scopes: c.Scopes, Rate: c.Rate, Quota: c.Quota, Created: c.Created}
}

func (s *Server) adminCreateClient(w http.ResponseWriter, r *http.Request) {
	var spec ClientSpec
	if !readAdminJSON(w, r, &spec) {
		return
	}
	c, secret, err := s.CreateClient(r.Context(), spec)
	if err != nil {
		s.adminFail(w, err)
		return
	}
	writeNoStore(w, http.StatusCreated, view(c, secret))
}

func (s *Server) adminListClients(w http.ResponseWriter, r *http.Request) {
	cs, err := s.Clients(r.Context())
	if err != nil {
		s.adminFail(w, err)
		return
	}
	out := make([]ClientView, 0, len(cs))
	for _, c := range cs {
		out = append(out, view(c, ""))
	}
	writeNoStore(w, http.StatusOK, map[string]any{"clients": out})
}

func (s *Server) adminGetClient(w http.ResponseWriter, r *http.Request) {
	c, err := s.Client(r.Context(), r.PathValue("id"))
	if err != nil {
		s.adminFail(w, err)
		return
	}
	writeNoStore(w, http.StatusOK, view(c, ""))
}

func (s *Server) adminDeleteClient(w http.ResponseWriter, r *http.Request) {
	if err := s.DeleteClient(r.Context(), r.PathValue("id")); err != nil {
		s.adminFail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) adminMintToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		DeviceTokenSpec
		TTL string `json:"ttl,omitempty"`
	}
	if !readAdminJSON(w, r, &req) {
		return
	}
	spec := req.DeviceTokenSpec
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeNoStore(w, http.StatusBadRequest, map[string]string{"error": "ttl: " + err.Error()})
			return
		}
		spec.TTL = d
	}
	t, err := s.MintDeviceToken(r.Context(), spec)
	if err != nil {
		s.adminFail(w, err)
		return
	}
	writeNoStore(w, http.StatusCreated, t)
}

func readAdminJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeNoStore(w, http.StatusBadRequest, map[string]string{"error": "body: " + err.Error()})
		return false
	}
	return true
}

func (s *Server) adminFail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrInvalid):
		writeNoStore(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
	case errors.Is(err, verifier.ErrNotFound):
		writeNoStore(w, http.StatusNotFound, map[string]string{"error": err.Error()})
	default:
		s.log.Error("oauth admin", "err", err)
		writeNoStore(w, http.StatusInternalServerError, map[string]string{"error": "internal error"})
	}
}
