package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/cardbind/cardbind/protocol"
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

// importBatch writes (or, in a dry run, plans) one batch and adds what
// it did to sum.
func (s *Service) importBatch(ctx context.Context, batch []inventory.Item, dryRun bool, sum *ImportSummary, events func(ImportEvent)) error {
	if dryRun {
		return s.dryRunBatch(ctx, batch, sum, events)
	}
	if hasRepeatedCard(batch) {
		return s.importCardByCard(ctx, batch, sum, events)
	}
	p, err := s.planBatch(ctx, batch)
	if err != nil {
		return err
	}
	err = s.store.CommitAll(ctx, p.commits)
	if errors.Is(err, verifier.ErrConflict) {
		// A card changed between the read and the write (a verification
		// of a card in the file): the slower path retries card by card.
		s.log.Info("import: batch conflicted, writing it card by card", "first_line", batch[0].Line, "err", err)
		return s.importCardByCard(ctx, batch, sum, events)
	}
	if err != nil {
		return err
	}
	sum.Created += p.sum.Created
	sum.Changed += p.sum.Changed
	sum.Unchanged += p.sum.Unchanged
	sum.Bound += p.sum.Bound
	sum.Errors += p.sum.Errors
	for _, ev := range p.lineErrors {
		events(ev)
	}
	if p.sum.Bound > 0 {
		s.log.Info("bindings changed", "actor", importActor, "cards", p.sum.Bound,
			"first_line", batch[0].Line, "last_line", batch[len(batch)-1].Line)
	}
	return nil
}

// importActor creates the bindings an import sets.
const importActor = "import"

// batchPlan is what a batch writes: one commit per card that changes,
// with the counts and line errors to report once it is written.
type batchPlan struct {
	commits    []*verifier.Commit
	sum        ImportSummary
	lineErrors []ImportEvent
}

// planBatch reads every card of the batch once and plans its write: the
// inventory fields as UpsertInventory sets them and, when the line's
// binding differs from the card's, the binding change exactly as Bind
// makes it (planChange). Cards must not repeat within the batch.
func (s *Service) planBatch(ctx context.Context, batch []inventory.Item) (*batchPlan, error) {
	p := &batchPlan{commits: make([]*verifier.Commit, 0, len(batch))}
	iccids := make([]protocol.ICCID, len(batch))
	for i, it := range batch {
		iccids[i] = it.Card.ICCID
	}
	cards, err := s.store.Cards(ctx, iccids)
	if err != nil {
		return nil, err
	}
	now := s.now().UTC()
	for i, it := range batch {
		c := cards[i]
		changed := true
		switch {
		case c == nil:
			// Created unbound, as UpsertInventory creates it.
			c = &verifier.Card{ICCID: it.Card.ICCID, Status: verifier.CardStatus{State: protocol.CardUnbound}}
			p.sum.Created++
		case inventoryDiffers(c, &it.Card):
			p.sum.Changed++
		default:
			p.sum.Unchanged++
			changed = false
		}
		c.Tenant, c.IMSI, c.MSISDN, c.NAI = it.Card.Tenant, it.Card.IMSI, it.Card.MSISDN, it.Card.NAI
		commit := &verifier.Commit{Card: c}
		if it.Binding != nil && cardBindingDiffers(c, it.Binding) {
			spec := importSpec(it.Binding)
			if err := spec.validate(); err != nil {
				p.sum.Errors++
				p.lineErrors = append(p.lineErrors, ImportEvent{Line: it.Line, Error: err.Error()})
			} else {
				if commit, _, err = planChange(c, now, importActor, bindEdit(spec, importActor)); err != nil {
					return nil, err
				}
				p.sum.Bound++
				changed = true
			}
		}
		if changed {
			p.commits = append(p.commits, commit)
		}
	}
	return p, nil
}

// importSpec is the BindSpec of an inventory line's binding.
func importSpec(b *verifier.Binding) BindSpec {
	ar := b.AutoResume
	return BindSpec{IMEIs: b.IMEIs, TAC: b.TAC, AlertOnly: b.Mode == verifier.ModeAlert, Grace: b.Grace, AutoResume: &ar}
}

// inventoryDiffers reports whether an import item changes a card's
// inventory fields.
func inventoryDiffers(c, item *verifier.Card) bool {
	return c.Tenant != item.Tenant || c.IMSI != item.IMSI || c.MSISDN != item.MSISDN || c.NAI != item.NAI
}

// hasRepeatedCard reports whether a card appears on two lines of batch.
func hasRepeatedCard(batch []inventory.Item) bool {
	seen := make(map[protocol.ICCID]bool, len(batch))
	for _, it := range batch {
		if seen[it.Card.ICCID] {
			return true
		}
		seen[it.Card.ICCID] = true
	}
	return false
}

// importCardByCard writes a batch the slow way: the inventory in one
// batch, then every binding through Bind, one commit per card. It takes
// batches that name a card twice (each line's binding is applied in
// turn) and batches whose one write conflicted.
func (s *Service) importCardByCard(ctx context.Context, batch []inventory.Item, sum *ImportSummary, events func(ImportEvent)) error {
	cards := make([]verifier.Card, len(batch))
	for i, it := range batch {
		cards[i] = it.Card
	}
	created, changed, err := s.store.UpsertInventory(ctx, cards)
	if err != nil {
		return err
	}
	sum.Created += created
	sum.Changed += changed
	sum.Unchanged += len(cards) - created - changed
	for _, it := range batch {
		if it.Binding == nil || !s.bindingDiffers(ctx, it) {
			continue
		}
		if _, err := s.Bind(ctx, it.Card.Tenant, it.Card.ICCID, importSpec(it.Binding), importActor); err != nil {
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

// dryRunBatch counts and reports what the batch would change.
func (s *Service) dryRunBatch(ctx context.Context, batch []inventory.Item, sum *ImportSummary, events func(ImportEvent)) error {
	for _, it := range batch {
		c := it.Card
		old, err := s.store.Card(ctx, c.ICCID)
		change := ""
		switch {
		case errors.Is(err, verifier.ErrNotFound):
			sum.Created++
			change = "create"
		case err != nil:
			return err
		case inventoryDiffers(old, &c):
			sum.Changed++
			change = "update"
		default:
			sum.Unchanged++
		}
		if change != "" {
			events(ImportEvent{Line: it.Line, ICCID: string(c.ICCID), Change: change})
		}
	}
	for _, it := range batch {
		if it.Binding == nil || !s.bindingDiffers(ctx, it) {
			continue
		}
		sum.Bound++
		events(ImportEvent{Line: it.Line, ICCID: string(it.Card.ICCID), Change: "bind"})
	}
	return nil
}

// bindingDiffers reports whether the item's binding differs from the
// card's, so that importing the same file twice binds nothing twice.
func (s *Service) bindingDiffers(ctx context.Context, it inventory.Item) bool {
	c, err := s.store.Card(ctx, it.Card.ICCID)
	if err != nil {
		return true
	}
	return cardBindingDiffers(c, it.Binding)
}

// cardBindingDiffers reports whether binding w differs from card c's.
func cardBindingDiffers(c *verifier.Card, w *verifier.Binding) bool {
	if c.Binding == nil {
		return true
	}
	b := c.Binding
	return !slices.Equal(b.IMEIs, w.IMEIs) || b.TAC != w.TAC || b.Mode != w.Mode || b.Grace != w.Grace || b.AutoResume != w.AutoResume
}
