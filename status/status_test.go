package status_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"testing"

	"github.com/aster-go/aster/codec/cbor"
	"github.com/aster-go/aster/status"
)

func TestCodeNames(t *testing.T) {
	for c := status.OK; c <= status.Unauthenticated; c++ {
		got, err := status.ParseCode(c.String())
		if err != nil || got != c {
			t.Errorf("ParseCode(%q) = %v, %v", c.String(), got, err)
		}
		if c.IsApplication() {
			t.Errorf("%v is an application code", c)
		}
	}
	for s, want := range map[string]status.Code{
		"not_found": status.NotFound, " UNAVAILABLE ": status.Unavailable, "7": status.PermissionDenied,
		"APP_142": 142, "142": 142,
	} {
		if got, err := status.ParseCode(s); err != nil || got != want {
			t.Errorf("ParseCode(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "NOPE", "-1", "APP_", "99999999999"} {
		if _, err := status.ParseCode(s); err == nil {
			t.Errorf("ParseCode(%q) succeeded", s)
		}
	}
	if s := status.Code(142).String(); s != "APP_142" || !status.Code(142).IsApplication() {
		t.Errorf("142: %q", s)
	}
	if s := status.Code(50).String(); s != "CODE_50" || status.Code(50).IsApplication() {
		t.Errorf("50: %q", s)
	}
}

func TestErrorAndConversions(t *testing.T) {
	e := status.New(status.NotFound, "no such thing")
	if e.Code() != status.NotFound || e.Message() != "no such thing" || e.Error() != "NOT_FOUND: no such thing" {
		t.Fatalf("New: %v", e)
	}
	if got := status.New(status.Internal, "").Error(); got != "INTERNAL" {
		t.Errorf("empty message: %q", got)
	}
	var nilErr *status.Error
	if nilErr.Code() != status.OK {
		t.Error("a nil *Error is not OK")
	}

	cause := io.ErrUnexpectedEOF
	ef := status.Errorf(status.DataLoss, "reading: %w", cause)
	if !errors.Is(ef, cause) || ef.Message() != "reading: unexpected EOF" {
		t.Errorf("Errorf %%w: %v", ef)
	}
	w := status.Wrap(status.Unavailable, cause)
	if !errors.Is(w, cause) || w.Code() != status.Unavailable || w.Message() != cause.Error() {
		t.Errorf("Wrap: %v", w)
	}
	if status.Wrap(status.Internal, nil) != nil {
		t.Error("Wrap(nil) is not nil")
	}

	if status.FromError(nil) != nil || status.CodeOf(nil) != status.OK {
		t.Error("nil is not OK")
	}
	wrapped := fmt.Errorf("outer: %w", e)
	if status.FromError(wrapped) != e || status.CodeOf(wrapped) != status.NotFound {
		t.Error("FromError does not find an *Error in the chain")
	}
	for err, want := range map[error]status.Code{
		context.Canceled:                         status.Canceled,
		context.DeadlineExceeded:                 status.DeadlineExceeded,
		fmt.Errorf("x: %w", context.Canceled):    status.Canceled,
		errors.New("plain"):                      status.Unknown,
		fmt.Errorf("y: %w", errors.New("plain")): status.Unknown,
	} {
		se := status.FromError(err)
		if se.Code() != want || !errors.Is(se, err) {
			t.Errorf("FromError(%v) = %v, want code %v wrapping it", err, se, want)
		}
	}

	m := status.New(status.ResourceExhausted, "slow down").WithMetadata("retry-after", "2")
	if m.Metadata()["retry-after"] != "2" {
		t.Errorf("metadata %v", m.Metadata())
	}
	fw := status.FromWire(142, "app", []status.Detail{{Type: "t", Value: []byte{1}}}, map[string]string{"k": "v"})
	if fw.Code() != 142 || fw.Message() != "app" || len(fw.Details()) != 1 || fw.Metadata()["k"] != "v" {
		t.Errorf("FromWire: %v %v %v", fw, fw.Details(), fw.Metadata())
	}
}

type QuotaInfo struct {
	Limit int    `cbor:"limit"`
	Scope string `cbor:"scope,omitempty"`
}

func (QuotaInfo) WireType() string { return "mission/QuotaInfo" }

type RetryHint struct {
	AfterMillis int `cbor:"after_ms"`
}

func TestTypedDetails(t *testing.T) {
	base := status.New(status.Code(100), "quota exceeded")
	e, err := base.WithDetails(&QuotaInfo{Limit: 1000}, RetryHint{AfterMillis: 250})
	if err != nil {
		t.Fatal(err)
	}
	if len(base.Details()) != 0 {
		t.Fatal("WithDetails changed the original error")
	}
	ds := e.Details()
	if len(ds) != 2 || ds[0].Type != "mission/QuotaInfo" || ds[1].Type != "github.com/aster-go/aster/status_test.RetryHint" {
		t.Fatalf("details %+v", ds)
	}
	// The value is the deterministic CBOR of the message (PROTOCOL.md 7.1).
	if want, _ := cbor.Marshal(QuotaInfo{Limit: 1000}); !reflect.DeepEqual(ds[0].Value, want) {
		t.Errorf("value %x, want %x", ds[0].Value, want)
	}
	if e.Code() != base.Code() || e.Message() != base.Message() {
		t.Errorf("code or message changed: %v", e)
	}

	// Read back typed, after the trip through the wire's fields.
	got := status.FromWire(e.Code(), e.Message(), e.Details(), nil)
	q, ok := status.AsDetail[QuotaInfo](fmt.Errorf("call failed: %w", got))
	if !ok || q.Limit != 1000 {
		t.Fatalf("AsDetail[QuotaInfo] = %+v, %v", q, ok)
	}
	var r RetryHint
	if ok, err := got.Detail(&r); !ok || err != nil || r.AfterMillis != 250 {
		t.Fatalf("Detail(&RetryHint) = %v, %v, %+v", ok, err, r)
	}
	type Absent struct{ X int }
	if _, ok := status.AsDetail[Absent](got); ok {
		t.Error("AsDetail found a detail of a type that is not there")
	}
	if _, ok := status.AsDetail[QuotaInfo](errors.New("no status")); ok {
		t.Error("AsDetail on a plain error")
	}

	// A detail of the right type that does not decode is an error.
	bad := status.New(status.Internal, "x").AddDetail(status.Detail{Type: "mission/QuotaInfo", Value: []byte{0xff}})
	var q2 QuotaInfo
	if ok, err := bad.Detail(&q2); !ok || err == nil {
		t.Errorf("undecodable detail: %v, %v", ok, err)
	}
	if _, ok := status.AsDetail[QuotaInfo](bad); ok {
		t.Error("AsDetail returned an undecodable detail")
	}
	if _, err := bad.Detail(q2); err == nil {
		t.Error("Detail into a non-pointer succeeded")
	}
	if ok, err := nilError().Detail(&q2); ok || err != nil {
		t.Errorf("Detail on nil: %v %v", ok, err)
	}

	// Messages that cannot be details.
	if same, err := base.WithDetails(nil); err == nil || same != base {
		t.Errorf("nil detail: %v", err)
	}
	if _, err := base.WithDetails(make(chan int)); err == nil {
		t.Error("a channel encoded as a detail")
	}
}

func nilError() *status.Error { return nil }

// WithDetails on an error shared by callers must not let one caller's
// details show up in another's.
func TestWithDetailsDoesNotAlias(t *testing.T) {
	base, _ := status.New(status.Internal, "x").WithDetails(&QuotaInfo{Limit: 1})
	a, _ := base.WithDetails(&QuotaInfo{Limit: 2})
	b, _ := base.WithDetails(&QuotaInfo{Limit: 3})
	if len(a.Details()) != 2 || len(b.Details()) != 2 {
		t.Fatalf("lengths %d %d", len(a.Details()), len(b.Details()))
	}
	var qa, qb QuotaInfo
	_ = cbor.Unmarshal(a.Details()[1].Value, &qa)
	_ = cbor.Unmarshal(b.Details()[1].Value, &qb)
	if qa.Limit != 2 || qb.Limit != 3 {
		t.Fatalf("details aliased: %d %d", qa.Limit, qb.Limit)
	}
}

func TestTypeName(t *testing.T) {
	for typ, want := range map[reflect.Type]string{
		reflect.TypeFor[QuotaInfo]():   "mission/QuotaInfo",
		reflect.TypeFor[*QuotaInfo]():  "mission/QuotaInfo",
		reflect.TypeFor[**QuotaInfo](): "mission/QuotaInfo",
		reflect.TypeFor[RetryHint]():   "github.com/aster-go/aster/status_test.RetryHint",
		reflect.TypeFor[int]():         "int",
		reflect.TypeFor[[]string]():    "[]string",
	} {
		if got := status.TypeName(typ); got != want {
			t.Errorf("TypeName(%v) = %q, want %q", typ, got, want)
		}
	}
}

func ExampleError_WithDetails() {
	// On the server: attach typed details to the error a handler returns.
	err, _ := status.Errorf(status.ResourceExhausted, "quota exceeded").WithDetails(&QuotaInfo{Limit: 1000})

	// On the client: read them back from the call's error.
	if q, ok := status.AsDetail[QuotaInfo](err); ok {
		fmt.Println(status.CodeOf(err), "limit", q.Limit)
	}
	// Output: RESOURCE_EXHAUSTED limit 1000
}
