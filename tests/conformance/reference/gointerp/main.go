// Command gointerp runs a conformance script (tests/conformance/SCRIPT.md)
// against Go's standard library context package and writes the canonical
// transcript to stdout. It is the reference that tether's interpreter
// (tests/conformance/interp.rs) is compared with: every NAME.golden in the
// corpus is this program's output for NAME.script.
//
//	go run . [flags] < NAME.script > NAME.golden
//
// Exit status: 0 complete; 1 I/O or internal error; 2 invalid script
// (nothing ran); 3 complete, but this run was late (re-run it); 4 complete,
// but the script's outcome depends on timing even on an idle machine (fix
// the script). See SCRIPT.md, "Exit status" and "Robust scripts".
//
// Only the standard library is used; the context package is the thing under
// test, everything else is bookkeeping.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

var (
	flagTolerance = flag.Duration("tolerance", 25*time.Millisecond,
		"largest lateness of an op behind the virtual clock that a script must withstand")
	flagSettle = flag.Duration("settle-timeout", 2*time.Second,
		"how long to wait for after_funcs that are due before printing '! settle-timeout'")
	flagNearBefore = flag.Duration("near-before", 15*time.Millisecond,
		"an op this close before a pending deadline makes the run late (status 3)")
	flagNearAfter = flag.Duration("near-after", 100*time.Millisecond,
		"an op this close after a pending deadline makes the run late (status 3)")
	flagTrace = flag.Bool("trace", false, "log every op with its real time offset on stderr")
)

const (
	offsetLimit = 100_000_000_000 // |MS| bound for deadline and timeout offsets
	sleepLimit  = 600_000         // bound for one sleep
)

// ------------------------------------------------------------------ tokens

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		digit := c >= '0' && c <= '9'
		if !letter && !(digit && i > 0) {
			return false
		}
	}
	return true
}

func isWord(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			strings.IndexByte("_.:/-", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

func isCause(s string) bool {
	switch s {
	case "nil", "canceled", "deadline_exceeded":
		return true
	case "none":
		return false
	}
	return isIdent(s)
}

func parseMS(s string, lo, hi int64) (int64, bool) {
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n >= lo && n <= hi
}

// ------------------------------------------------------------------ parsing

// stmt is one statement of the script, comment and extra blanks removed.
type stmt struct {
	line int
	word []string // word[0] is the statement name
}

func (s stmt) text() string     { return strings.Join(s.word, " ") }
func (s stmt) arg(i int) string { return s.word[i+1] }
func (s stmt) nargs() int       { return len(s.word) - 1 }

// constructor kinds that hand out a cancel function
var hasCancel = map[string]bool{
	"with_cancel": true, "with_cancel_cause": true,
	"with_deadline": true, "with_deadline_cause": true,
	"with_timeout": true, "with_timeout_cause": true,
}

// checker validates statements in order; names maps every defined ID to the
// statement that defined it ("after_func" for after_funcs).
type checker struct{ names map[string]string }

func (k *checker) fresh(id string) error {
	if !isIdent(id) {
		return fmt.Errorf("bad id %q", id)
	}
	if _, taken := k.names[id]; taken {
		return fmt.Errorf("id %q already defined", id)
	}
	return nil
}

func (k *checker) context(id string) error {
	if kind, ok := k.names[id]; !ok || kind == "after_func" {
		return fmt.Errorf("unknown context %q", id)
	}
	return nil
}

func (k *checker) cancellable(id string) error {
	if err := k.context(id); err != nil {
		return err
	}
	if !hasCancel[k.names[id]] {
		return fmt.Errorf("context %q (%s) has no cancel function", id, k.names[id])
	}
	return nil
}

// shape gives, for each statement, the accepted argument counts.
var shape = map[string][]int{
	"background": {1}, "todo": {1},
	"with_cancel": {2}, "with_cancel_cause": {2}, "without_cancel": {2},
	"with_deadline": {3}, "with_timeout": {3},
	"with_deadline_cause": {4}, "with_timeout_cause": {4},
	"with_value": {4}, "with_value_nil": {3},
	"cancel": {1, 2}, "after_func": {2, 4}, "stop": {1}, "sleep": {1}, "errtext": {1},
}

func (k *checker) check(s stmt) error {
	name, n := s.word[0], s.nargs()
	if name == "note" {
		return nil
	}
	if name == "check" {
		for i := 0; i < n; i++ {
			if !isWord(s.arg(i)) {
				return fmt.Errorf("bad key %q", s.arg(i))
			}
		}
		return nil
	}
	counts, known := shape[name]
	if !known {
		return errors.New("unknown statement")
	}
	okCount := false
	for _, c := range counts {
		okCount = okCount || c == n
	}
	if !okCount {
		return fmt.Errorf("wrong number of arguments (%d)", n)
	}
	var err error
	switch name {
	case "background", "todo":
		err = k.fresh(s.arg(0))
	case "with_cancel", "with_cancel_cause", "without_cancel":
		err = first(k.fresh(s.arg(0)), k.context(s.arg(1)))
	case "with_deadline", "with_timeout", "with_deadline_cause", "with_timeout_cause":
		err = first(k.fresh(s.arg(0)), k.context(s.arg(1)))
		if _, ok := parseMS(s.arg(2), -offsetLimit, offsetLimit); !ok && err == nil {
			err = fmt.Errorf("bad offset %q", s.arg(2))
		}
		if n == 4 && !isCause(s.arg(3)) && err == nil {
			err = fmt.Errorf("bad cause %q", s.arg(3))
		}
	case "with_value", "with_value_nil":
		err = first(k.fresh(s.arg(0)), k.context(s.arg(1)))
		for i := 2; i < n && err == nil; i++ {
			if !isWord(s.arg(i)) {
				err = fmt.Errorf("bad key/value %q", s.arg(i))
			}
		}
	case "cancel":
		err = k.cancellable(s.arg(0))
		if err == nil && n == 2 {
			if k.names[s.arg(0)] != "with_cancel_cause" {
				err = errors.New("only a with_cancel_cause context takes a cause")
			} else if !isCause(s.arg(1)) {
				err = fmt.Errorf("bad cause %q", s.arg(1))
			}
		}
	case "after_func":
		err = first(k.fresh(s.arg(0)), k.context(s.arg(1)))
		if err == nil && n == 4 {
			switch s.arg(2) {
			case "cancel":
				err = k.cancellable(s.arg(3))
			case "cancel_cause":
				err = k.cancellable(s.arg(3))
				if err == nil && k.names[s.arg(3)] != "with_cancel_cause" {
					err = errors.New("the cancel_cause target must be a with_cancel_cause context")
				}
			default:
				err = fmt.Errorf("unknown after_func action %q", s.arg(2))
			}
		}
	case "stop":
		if k.names[s.arg(0)] != "after_func" {
			err = fmt.Errorf("unknown after_func %q", s.arg(0))
		}
	case "sleep":
		if _, ok := parseMS(s.arg(0), 0, sleepLimit); !ok {
			err = fmt.Errorf("bad sleep %q", s.arg(0))
		}
	case "errtext":
		err = k.context(s.arg(0))
	}
	if err != nil {
		return err
	}
	switch name {
	case "cancel", "stop", "sleep", "errtext":
	case "after_func":
		k.names[s.arg(0)] = "after_func"
	default:
		k.names[s.arg(0)] = name
	}
	return nil
}

// first returns the first non-nil error.
func first(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func parseScript(r io.Reader) ([]stmt, error) {
	var out []stmt
	k := &checker{names: map[string]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4<<20)
	line := 0
	for sc.Scan() {
		line++
		text, _, _ := strings.Cut(sc.Text(), "#")
		words := strings.Fields(text)
		if len(words) == 0 {
			continue
		}
		s := stmt{line: line, word: words}
		if err := k.check(s); err != nil {
			return nil, fmt.Errorf("line %d: %q: %v", line, s.text(), err)
		}
		out = append(out, s)
	}
	return out, sc.Err()
}

// ------------------------------------------------------------------ running

// node is a context the script made.
type node struct {
	id     string
	ctx    context.Context
	cancel func(cause error) // nil when the constructor gave no cancel function
}

// callback is an after_func the script registered.
type callback struct {
	id, on   string
	ctx      context.Context
	stop     func() bool
	stopped  atomic.Bool  // a stop() returned true: it can never run
	runs     atomic.Int32 // completed runs (action first, then the count)
	reported bool         // already named in a settle-timeout line
}

// instant is one distinct deadline the run has seen, with how the timing
// model of SCRIPT.md places it.
type instant struct {
	at      time.Time
	label   string          // ID of the first context whose Deadline() returned it
	texts   map[string]bool // time.Time.String() forms seen for it
	pending bool            // still ahead when first seen: may fire during the run
	exact   bool            // T0+offset (with_deadline) rather than call time+offset
	nominal time.Time       // the instant with zero lateness
	phase   int             // sleeps executed before the statement that made it
}

type runner struct {
	out      *bufio.Writer
	t0       time.Time
	virtual  time.Duration
	phase    int
	end      time.Time // no deadline after this can fire during the run
	nodes    []*node
	node     map[string]*node
	cbs      []*callback
	cb       map[string]*callback
	errOf    map[string]error // named causes, one value per name
	nameOf   map[error]string
	keys     map[string]bool
	instants []*instant
	timers   []time.Time // own timers due during the run
	wake     chan struct{}
	cur      stmt
	late     []string
	fragile  []string
	seen     map[string]bool
}

func newRunner(w io.Writer) *runner {
	return &runner{
		out:    bufio.NewWriter(w),
		node:   map[string]*node{},
		cb:     map[string]*callback{},
		errOf:  map[string]error{},
		nameOf: map[error]string{},
		keys:   map[string]bool{},
		wake:   make(chan struct{}, 1),
		seen:   map[string]bool{},
	}
}

func (r *runner) causeOf(tok string) error {
	switch tok {
	case "nil":
		return nil
	case "canceled":
		return context.Canceled
	case "deadline_exceeded":
		return context.DeadlineExceeded
	}
	if e, ok := r.errOf[tok]; ok {
		return e
	}
	e := errors.New(tok)
	r.errOf[tok], r.nameOf[e] = e, tok
	return e
}

func (r *runner) errName(err error) string {
	switch err {
	case nil:
		return "none"
	case context.Canceled:
		return "canceled"
	case context.DeadlineExceeded:
		return "deadline_exceeded"
	}
	if name, ok := r.nameOf[err]; ok {
		return name
	}
	return "?" + strconv.Quote(err.Error())
}

func quoted(err error) string {
	if err == nil {
		return "none"
	}
	return strconv.Quote(err.Error())
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (r *runner) findInstant(t time.Time) *instant {
	for _, in := range r.instants {
		if in.at.Equal(t) {
			return in
		}
	}
	return nil
}

// record adds a new context and files its deadline; model describes the
// deadline if this statement made it (nil: inherited or none).
func (r *runner) record(id string, c context.Context, cancel func(error), model *instant) {
	n := &node{id: id, ctx: c, cancel: cancel}
	r.nodes = append(r.nodes, n)
	r.node[id] = n
	at, ok := c.Deadline()
	if !ok {
		return
	}
	text := at.String()
	if in := r.findInstant(at); in != nil {
		in.texts[text] = true
		return
	}
	in := &instant{at: at, label: id, texts: map[string]bool{text: true},
		pending: at.After(time.Now()), exact: true, nominal: at, phase: r.phase}
	if model != nil {
		in.exact, in.nominal, in.phase = model.exact, model.nominal, model.phase
	}
	r.instants = append(r.instants, in)
}

func (r *runner) label(c context.Context) string {
	at, ok := c.Deadline()
	if !ok {
		return "none"
	}
	if in := r.findInstant(at); in != nil {
		return "@" + in.label
	}
	return "@?"
}

// canonical rewrites every ".WithDeadline(<time> [<until>])" of c's String()
// to ".WithDeadline(@LABEL)". Neither the time nor keys and values (WORDs)
// contain parentheses, so the payload runs to the next ')'.
func (r *runner) canonical(c context.Context) string {
	const mark = ".WithDeadline("
	s := fmt.Sprint(c)
	var b strings.Builder
	for {
		i := strings.Index(s, mark)
		if i < 0 {
			break
		}
		rest := s[i+len(mark):]
		j := strings.IndexAny(rest, "()")
		if j < 0 || rest[j] != ')' {
			break
		}
		payload := rest[:j]
		if k := strings.LastIndex(payload, " ["); k >= 0 && strings.HasSuffix(payload, "]") {
			payload = payload[:k]
		}
		lbl := "?"
		for _, in := range r.instants {
			if in.texts[payload] {
				lbl = in.label
				break
			}
		}
		b.WriteString(s[:i] + mark + "@" + lbl + ")")
		s = rest[j+1:]
	}
	b.WriteString(s)
	return b.String()
}

// settle waits until every after_func that must run by now has run.
func (r *runner) settle() {
	giveUp := time.Now().Add(*flagSettle)
	for {
		var due []*callback
		for _, cb := range r.cbs {
			if !cb.reported && !cb.stopped.Load() && cb.runs.Load() == 0 && closed(cb.ctx.Done()) {
				due = append(due, cb)
			}
		}
		if len(due) == 0 {
			return
		}
		if time.Now().After(giveUp) {
			ids := make([]string, len(due))
			for i, cb := range due {
				ids[i], cb.reported = cb.id, true
			}
			fmt.Fprintf(r.out, "! settle-timeout %s\n", strings.Join(ids, " "))
			return
		}
		t := time.NewTimer(time.Millisecond) // in case two wake-ups merged into one
		select {
		case <-r.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (r *runner) noteLate(key, format string, args ...any) {
	if r.seen[key] {
		return
	}
	r.seen[key] = true
	r.late = append(r.late, fmt.Sprintf("line %d (%s): ", r.cur.line, r.cur.text())+fmt.Sprintf(format, args...))
}

func (r *runner) noteFragile(format string, args ...any) {
	r.fragile = append(r.fragile, fmt.Sprintf("line %d (%s): ", r.cur.line, r.cur.text())+fmt.Sprintf(format, args...))
}

// watch checks, at the start or the end of a statement, that the run is
// still inside the timing model.
func (r *runner) watch(when string) {
	now := time.Now()
	if lag := now.Sub(r.t0.Add(r.virtual)); lag > *flagTolerance {
		r.noteLate(fmt.Sprintf("%d lag %s", r.cur.line, when),
			"%s %.3fms behind the virtual clock", when, msf(lag))
	}
	for _, in := range r.instants {
		if !in.pending {
			continue
		}
		if d := now.Sub(in.at); d > -*flagNearBefore && d < *flagNearAfter {
			r.noteLate(fmt.Sprintf("%d near %s", r.cur.line, in.label),
				"%s %+.3fms from the deadline @%s", when, msf(d), in.label)
		}
	}
}

// undecided reports whether "parent.Before(child)", the comparison
// WithDeadline makes, can come out either way for lateness in (0, tolerance).
func undecided(parent, child *instant, tol time.Duration) bool {
	diff := parent.nominal.Sub(child.nominal) // parent - child with zero lateness
	switch {
	case parent.exact && child.exact:
		return false
	case parent.exact: // child = nominal + lateness
		return diff > 0 && diff < tol
	case child.exact: // parent = nominal + lateness
		return diff < 0 && diff > -tol
	case parent.phase == child.phase: // the child's call came later: more lateness
		return diff > 0 && diff < tol
	default:
		return diff > -tol && diff < tol
	}
}

func (r *runner) withDeadline(s stmt) {
	id, parent := s.arg(0), r.node[s.arg(1)].ctx
	off, _ := parseMS(s.arg(2), -offsetLimit, offsetLimit)
	d := time.Duration(off) * time.Millisecond
	relative := strings.HasPrefix(s.word[0], "with_timeout")
	model := &instant{exact: !relative, nominal: r.t0.Add(d), phase: r.phase}
	if relative {
		model.nominal = r.t0.Add(r.virtual + d)
	}
	if pat, ok := parent.Deadline(); ok {
		if pin := r.findInstant(pat); pin != nil && undecided(pin, model, *flagTolerance) {
			r.noteFragile("whether the parent's deadline @%s comes first depends on lateness", pin.label)
		}
	}
	if now := r.t0.Add(r.virtual); !relative && model.nominal.After(now) && model.nominal.Before(now.Add(*flagTolerance)) {
		r.noteFragile("the deadline is less than the tolerance ahead, so it may or may not have passed")
	}
	var c context.Context
	var cancel context.CancelFunc
	switch s.word[0] {
	case "with_deadline":
		c, cancel = context.WithDeadline(parent, model.nominal)
	case "with_deadline_cause":
		c, cancel = context.WithDeadlineCause(parent, model.nominal, r.causeOf(s.arg(3)))
	case "with_timeout":
		c, cancel = context.WithTimeout(parent, d)
	case "with_timeout_cause":
		c, cancel = context.WithTimeoutCause(parent, d, r.causeOf(s.arg(3)))
	}
	r.record(id, c, func(error) { cancel() }, model)
	// Go arms a timer of its own unless the parent's deadline came first, in
	// which case the result prints as ".WithCancel". Two own timers that fire
	// within the tolerance of each other fire in an order nobody chose.
	at, _ := c.Deadline()
	own := !strings.HasSuffix(fmt.Sprint(c), ".WithCancel")
	if own && c.Err() == nil && at.Before(r.end) {
		for _, t := range r.timers {
			if gap := at.Sub(t); gap > -*flagTolerance && gap < *flagTolerance {
				r.noteFragile("its timer fires %+.3fms from another pending timer", msf(gap))
			}
		}
		r.timers = append(r.timers, at)
	}
}

func (r *runner) exec(s stmt) {
	parent := func() context.Context { return r.node[s.arg(1)].ctx }
	switch s.word[0] {
	case "note":
	case "background":
		r.record(s.arg(0), context.Background(), nil, nil)
	case "todo":
		r.record(s.arg(0), context.TODO(), nil, nil)
	case "with_cancel":
		c, cancel := context.WithCancel(parent())
		r.record(s.arg(0), c, func(error) { cancel() }, nil)
	case "with_cancel_cause":
		c, cancel := context.WithCancelCause(parent())
		r.record(s.arg(0), c, cancel, nil)
	case "with_deadline", "with_deadline_cause", "with_timeout", "with_timeout_cause":
		r.withDeadline(s)
	case "with_value":
		r.keys[s.arg(2)] = true
		r.record(s.arg(0), context.WithValue(parent(), s.arg(2), s.arg(3)), nil, nil)
	case "with_value_nil":
		r.keys[s.arg(2)] = true
		r.record(s.arg(0), context.WithValue(parent(), s.arg(2), nil), nil, nil)
	case "without_cancel":
		r.record(s.arg(0), context.WithoutCancel(parent()), nil, nil)
	case "cancel":
		var cause error
		if s.nargs() == 2 {
			cause = r.causeOf(s.arg(1))
		}
		r.node[s.arg(0)].cancel(cause)
	case "after_func":
		on := r.node[s.arg(1)]
		cb := &callback{id: s.arg(0), on: on.id, ctx: on.ctx}
		action := func() {}
		if s.nargs() == 4 {
			target := r.node[s.arg(3)]
			if s.arg(2) == "cancel" {
				action = func() { target.cancel(nil) }
			} else {
				action = func() { target.cancel(context.Cause(on.ctx)) }
			}
		}
		cb.stop = context.AfterFunc(on.ctx, func() {
			action()
			cb.runs.Add(1)
			select {
			case r.wake <- struct{}{}:
			default:
			}
		})
		r.cbs = append(r.cbs, cb)
		r.cb[cb.id] = cb
	case "stop":
		cb := r.cb[s.arg(0)]
		ok := cb.stop()
		if ok {
			cb.stopped.Store(true)
		}
		fmt.Fprintf(r.out, "stop %s = %t\n", cb.id, ok)
	case "sleep":
		n, _ := parseMS(s.arg(0), 0, sleepLimit)
		r.virtual += time.Duration(n) * time.Millisecond
		r.phase++
		time.Sleep(time.Until(r.t0.Add(r.virtual)))
	case "errtext":
		c := r.node[s.arg(0)].ctx
		err := c.Err()
		timeout := false
		if t, ok := err.(interface{ Timeout() bool }); ok {
			timeout = t.Timeout()
		}
		fmt.Fprintf(r.out, "errtext %s err=%s timeout=%t cause=%s\n",
			s.arg(0), quoted(err), timeout, quoted(context.Cause(c)))
	case "check":
		r.settle()
		keys := s.word[1:]
		if len(keys) == 0 {
			for k := range r.keys {
				keys = append(keys, k)
			}
			sort.Strings(keys)
		}
		for _, n := range r.nodes {
			c := n.ctx
			done := "nil"
			if ch := c.Done(); ch != nil {
				done = "open"
				if closed(ch) {
					done = "closed"
				}
			}
			vals := make([]string, len(keys))
			for i, k := range keys {
				if v := c.Value(k); v != nil {
					vals[i] = fmt.Sprintf("%s=%v", k, v)
				} else {
					vals[i] = k + "=<nil>"
				}
			}
			fmt.Fprintf(r.out, "  %s err=%s cause=%s done=%s deadline=%s values=[%s] string=%s\n",
				n.id, r.errName(c.Err()), r.errName(context.Cause(c)), done, r.label(c),
				strings.Join(vals, " "), r.canonical(c))
		}
		for _, cb := range r.cbs {
			fmt.Fprintf(r.out, "  %s on=%s runs=%d\n", cb.id, cb.on, cb.runs.Load())
		}
	default:
		panic("unvalidated statement " + s.word[0])
	}
}

func (r *runner) run(script []stmt) error {
	var total time.Duration
	for _, s := range script {
		if s.word[0] == "sleep" {
			n, _ := parseMS(s.arg(0), 0, sleepLimit)
			total += time.Duration(n) * time.Millisecond
		}
	}
	r.t0 = time.Now()
	r.end = r.t0.Add(total + *flagTolerance)
	for _, s := range script {
		r.cur = s
		r.watch("start")
		if *flagTrace {
			fmt.Fprintf(os.Stderr, "%10.3fms line %d: %s\n", msf(time.Since(r.t0)), s.line, s.text())
		}
		fmt.Fprintf(r.out, "> %s\n", s.text())
		r.exec(s)
		r.settle()
		r.watch("end")
		if err := r.out.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: gointerp [flags] < NAME.script > NAME.golden")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	script, err := parseScript(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gointerp: invalid script: %v\n", err)
		os.Exit(2)
	}
	r := newRunner(os.Stdout)
	if err := r.run(script); err != nil {
		fmt.Fprintf(os.Stderr, "gointerp: %v\n", err)
		os.Exit(1)
	}
	for _, f := range r.fragile {
		fmt.Fprintf(os.Stderr, "gointerp: fragile: %s\n", f)
	}
	for _, l := range r.late {
		fmt.Fprintf(os.Stderr, "gointerp: late: %s\n", l)
	}
	switch {
	case len(r.fragile) > 0:
		os.Exit(4)
	case len(r.late) > 0:
		os.Exit(3)
	}
}
