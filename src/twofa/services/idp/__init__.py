"""twofa as an identity provider: the registry of applications users sign in to (OpenID
Connect clients now, SAML service providers later), the keys that sign ID tokens, and the
OpenID Connect authorization code flow. The sign-in itself stays twofa's own (password, then
the second factor through the one gate); this package only decides whether the session in
hand is enough for the application and what to tell the application about it.

The protocol layer is written here on joserfc (JWS/JWK) rather than on Authlib's
`AuthorizationServer`: Authlib's grants call their storage hooks synchronously and redeem a
code by query-then-delete, where twofa's storage is async and a code must be redeemed by one
conditional UPDATE (DESIGN.md §3)."""
