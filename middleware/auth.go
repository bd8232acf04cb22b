package middleware

import (
	"context"
	"crypto/subtle"
	"strings"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/status"
)

// AuthorizationKey is the metadata key carrying a bearer token:
// "authorization: Bearer <token>".
const AuthorizationKey = "authorization"

// RequireCapabilities is server middleware that enforces each method's
// capability requirement (handler.Requires, Service.Require) against the
// capabilities granted to the peer at admission. A peer admitted through an
// open gate (Peer.Unrestricted) passes. Denial is PERMISSION_DENIED with a
// message that reveals nothing about the method.
//
// The server already performs this check before any middleware runs; this
// form lets a chain place it explicitly, and use it in handlers composed
// outside a server (tests, proxies).
func RequireCapabilities() Server {
	return func(next handler.Handler) handler.Handler {
		return handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error {
			if req := s.Method().Requires; req != nil {
				if p := s.Peer(); !p.Unrestricted && !req.Satisfied(p.Capabilities) {
					return status.New(status.PermissionDenied, "permission denied")
				}
			}
			return next.ServeRPC(ctx, s)
		})
	}
}

// BearerOptions configure BearerAuth.
type BearerOptions struct {
	// Validate checks a token for a call and returns the context the handler
	// runs with (e.g. carrying the token's principal) or an error: an
	// *status.Error keeps its code, any other error is UNAUTHENTICATED.
	// Required; see StaticTokens for a fixed set.
	Validate func(ctx context.Context, token string, s handler.Stream) (context.Context, error)
	// Skip, if set, exempts methods from the check (e.g. health probes).
	Skip func(*handler.MethodInfo) bool
}

// BearerAuth is server middleware for deployments that add their own tokens
// in metadata: it reads "authorization: Bearer <token>" and has
// opts.Validate check it. A missing or malformed header, or a token Validate
// refuses, ends the call with UNAUTHENTICATED before the handler runs.
func BearerAuth(opts BearerOptions) Server {
	if opts.Validate == nil {
		panic("middleware: BearerAuth needs BearerOptions.Validate")
	}
	return func(next handler.Handler) handler.Handler {
		return handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error {
			if opts.Skip != nil && opts.Skip(s.Method()) {
				return next.ServeRPC(ctx, s)
			}
			v := s.Header().Get(AuthorizationKey)
			token, ok := strings.CutPrefix(v, "Bearer ")
			if !ok || token == "" {
				return status.New(status.Unauthenticated, "missing bearer token")
			}
			nctx, err := opts.Validate(ctx, token, s)
			if err != nil {
				if se, ok := err.(*status.Error); ok {
					return se
				}
				return status.Errorf(status.Unauthenticated, "invalid bearer token: %w", err)
			}
			if nctx == nil {
				nctx = ctx
			}
			return next.ServeRPC(nctx, s)
		})
	}
}

// StaticTokens returns a BearerOptions.Validate accepting exactly the given
// tokens, compared in constant time.
func StaticTokens(tokens ...string) func(context.Context, string, handler.Stream) (context.Context, error) {
	return func(ctx context.Context, token string, _ handler.Stream) (context.Context, error) {
		ok := 0
		for _, t := range tokens {
			ok |= subtle.ConstantTimeCompare([]byte(t), []byte(token))
		}
		if ok != 1 {
			return nil, status.New(status.Unauthenticated, "invalid bearer token")
		}
		return ctx, nil
	}
}

// BearerToken is client middleware that adds "authorization: Bearer
// <token>" to every call, asking token for it per call (so it can refresh).
// An error from token fails the call with UNAUTHENTICATED.
func BearerToken(token func(ctx context.Context) (string, error)) Client {
	return func(next Caller) Caller {
		return WrapCaller(next, func(ctx context.Context, call *Call) (ClientStream, error) {
			t, err := token(ctx)
			if err != nil {
				return nil, status.Errorf(status.Unauthenticated, "getting bearer token: %w", err)
			}
			if call.Metadata == nil {
				call.Metadata = handler.Metadata{}
			}
			call.Metadata[AuthorizationKey] = "Bearer " + t
			return next.NewStream(ctx, call)
		})
	}
}
