package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/inventory"
)

// ImportSummary says what an import did (or, in a dry run, would do).
type ImportSummary struct {
	Lines     int  `json:"lines"`
	Created   int  `json:"created"`
	Changed   int  `json:"changed"`
	Unchanged int  `json:"unchanged"`
	Bound     int  `json:"bound"`
	Errors    int  `json:"errors"`
	DryRun    bool `json:"dry_run"`
}

// ImportEvent reports one line that failed, in a dry run one line that
// would change something, or progress every batch.
type ImportEvent struct {
	Line  int    `json:"line,omitempty"`
	Error string `json:"error,omitempty"`
	// ICCID and Change say, in a dry run, what the line would do:
	// "create", "update" (tenant or identifiers) or "bind".
	ICCID  string `json:"iccid,omitempty"`
	Change string `json:"change,omitempty"`
	// Progress is set on batch boundaries.
	Progress *ImportSummary `json:"progress,omitempty"`
}

// importBatch is how many cards go into one atomic store batch.
const importBatch = 1000

// Import reads an inventory file and creates or updates the cards in it,
// in batches; lines that carry binding columns also set the card's
// binding. It is idempotent: importing the same file again changes
// nothing. A bad line is reported through events and skipped; it never
// aborts the file. With dryRun, nothing is written and the summary says
// what would change. Cards of tenants that do not exist are refused.
func (s *Service) Import(ctx context.Context, r io.Reader, format inventory.Format, defaultTenant string, dryRun bool,
	events func(ImportEvent)) (ImportSummary, error) {
	sum := ImportSummary{DryRun: dryRun}
	tenants := map[string]bool{}
	var batch []inventory.Item
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := s.importBatch(ctx, batch, dryRun, &sum, events); err != nil {
			return err
		}
		batch = batch[:0]
		p := sum
		events(ImportEvent{Progress: &p})
		return nil
	}
	err := inventory.Read(r, format, defaultTenant, func(it inventory.Item, err error) error {
		sum.Lines++
		if err == nil {
			known, ok := tenants[it.Card.Tenant]
			if !ok {
				_, terr := s.Tenant(ctx, it.Card.Tenant)
				if terr != nil && !errors.Is(terr, verifier.ErrNotFound) {
					return terr
				}
				known = terr == nil
				tenants[it.Card.Tenant] = known
			}
			if !known {
				err = fmt.Errorf("line %d: tenant %q does not exist", it.Line, it.Card.Tenant)
			}
		}
		if err != nil {
			sum.Errors++
			events(ImportEvent{Line: it.Line, Error: err.Error()})
			return nil
		}
		batch = append(batch, it)
		if len(batch) == importBatch {
			return flush()
		}
		return ctx.Err()
	})
	if err != nil {
		return sum, fmt.Errorf("import: %w", err)
	}
	if err := flush(); err != nil {
		return sum, fmt.Errorf("import: %w", err)
	}
	return sum, nil
}

func (s *Service) importBatch(ctx context.Context, batch []inventory.Item, dryRun bool, sum *ImportSummary, events func(ImportEvent)) error {
	cards := make([]verifier.Card, len(batch))
	for i, it := range batch {
		cards[i] = it.Card
	}
	if dryRun {
		for i, c := range cards {
			old, err := s.store.Card(ctx, c.ICCID)
			change := ""
			switch {
			case errors.Is(err, verifier.ErrNotFound):
				sum.Created++
				change = "create"
			case err != nil:
				return err
			case old.Tenant != c.Tenant || old.IMSI != c.IMSI || old.MSISDN != c.MSISDN || old.NAI != c.NAI:
				sum.Changed++
				change = "update"
			default:
				sum.Unchanged++
			}
			if change != "" {
				events(ImportEvent{Line: batch[i].Line, ICCID: string(c.ICCID), Change: change})
			}
		}
	} else {
		created, changed, err := s.store.UpsertInventory(ctx, cards)
		if err != nil {
			return err
		}
		sum.Created += created
		sum.Changed += changed
		sum.Unchanged += len(cards) - created - changed
	}
	for _, it := range batch {
		if it.Binding == nil {
			continue
		}
		if !s.bindingDiffers(ctx, it) {
			continue
		}
		if dryRun {
			sum.Bound++
			events(ImportEvent{Line: it.Line, ICCID: string(it.Card.ICCID), Change: "bind"})
			continue
		}
		ar := it.Binding.AutoResume
		spec := BindSpec{IMEIs: it.Binding.IMEIs, TAC: it.Binding.TAC, AlertOnly: it.Binding.Mode == verifier.ModeAlert,
			Grace: it.Binding.Grace, AutoResume: &ar}
		if _, err := s.Bind(ctx, it.Card.Tenant, it.Card.ICCID, spec, "import"); err != nil {
			if errors.Is(err, ErrInvalid) {
				sum.Errors++
				events(ImportEvent{Line: it.Line, Error: err.Error()})
				continue
			}
			return err
		}
		sum.Bound++
	}
	return nil
}

// bindingDiffers reports whether the item's binding differs from the
// card's, so that importing the same file twice binds nothing twice.
func (s *Service) bindingDiffers(ctx context.Context, it inventory.Item) bool {
	c, err := s.store.Card(ctx, it.Card.ICCID)
	if err != nil || c.Binding == nil {
		return true
	}
	b, w := c.Binding, it.Binding
	return !slices.Equal(b.IMEIs, w.IMEIs) || b.TAC != w.TAC || b.Mode != w.Mode || b.Grace != w.Grace || b.AutoResume != w.AutoResume
}
