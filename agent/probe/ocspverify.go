package probe

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/crypto/ocsp"
)

// Errors VerifyOCSP wraps, so that a caller can tell a responder signing with the wrong key
// from one answering for the wrong certificate; ocsp.ResponseError (tryLater, unauthorized,
// ...) comes back unwrapped and is none of these.
var (
	// ErrOCSPSigner: the response carries a certificate RFC 6960 4.2.2.2 does not authorize.
	ErrOCSPSigner = errors.New("OCSP response signer not authorized")
	// ErrOCSPSignature: the signature does not verify with the authorized signer's key.
	ErrOCSPSignature = errors.New("bad OCSP signature")
	// ErrOCSPSerial: the response is about another certificate.
	ErrOCSPSerial = errors.New("OCSP response for another certificate")
)

// VerifyOCSP parses an OCSP response (DER) about leaf and checks who signed it, following
// RFC 6960 4.2.2.2: the issuer itself (the CA that issued leaf), or a delegated responder
// whose certificate the issuer issued directly and which carries id-kp-OCSPSigning. The
// response must hold a status for leaf's serial number.
//
// x/crypto's ParseResponseForCert cannot be given the issuer: when the response embeds a
// certificate it requires the issuer to have signed that certificate ("bad OCSP signature"
// in ocsp.go), which fails for the common case of a CA signing with its own key and
// embedding its own certificate (openssl ocsp -rsigner <CA> without -resp_no_certs), since
// the CA's certificate was signed by the root. So the response is parsed with no issuer,
// which still verifies the signature against an embedded certificate, and the rules above
// are applied here.
//
// With a nil issuer (a staple from a server whose chain we do not have) the signature is
// verified only against the embedded certificate, when there is one; who that certificate
// belongs to cannot be checked, and a response without one is not verified at all. The
// result then says no more than that the response is well-formed and about leaf's serial.
//
// Error responses come back as ocsp.ResponseError, unwrapped.
func VerifyOCSP(der []byte, leaf, issuer *x509.Certificate) (*ocsp.Response, error) {
	if leaf == nil {
		return nil, errors.New("verify OCSP response: no certificate to check it against")
	}
	resp, err := ocsp.ParseResponseForCert(der, leaf, nil)
	if err != nil {
		var re ocsp.ResponseError
		if errors.As(err, &re) {
			return nil, re
		}
		// A response with a single status that parses without leaf failed above only for
		// its serial number; say which certificate it is about instead of x/crypto's
		// "no response matching the supplied certificate".
		if other, err2 := ocsp.ParseResponse(der, nil); err2 == nil && other.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
			return nil, fmt.Errorf("%w: status for serial %X, the certificate's is %X", ErrOCSPSerial, other.SerialNumber, leaf.SerialNumber)
		}
		return nil, fmt.Errorf("parse OCSP response: %w", err)
	}
	// ParseResponseForCert picked the status by serial; checked again because everything
	// the caller reports rests on it.
	if resp.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		return nil, fmt.Errorf("%w: status for serial %X, the certificate's is %X", ErrOCSPSerial, resp.SerialNumber, leaf.SerialNumber)
	}
	if issuer == nil {
		return resp, nil
	}
	signer, err := ocspSigner(resp.Certificate, issuer)
	if err != nil {
		return nil, err
	}
	if err := resp.CheckSignatureFrom(signer); err != nil {
		return nil, fmt.Errorf("%w: does not verify with the key of %s: %v", ErrOCSPSignature, signer.Subject, err)
	}
	return resp, nil
}

// ocspSigner is the certificate whose key must have signed a response about a certificate
// issuer issued, given the certificate the response embeds (x/crypto keeps the first; nil
// when there is none).
func ocspSigner(embedded, issuer *x509.Certificate) (*x509.Certificate, error) {
	// The same key as the issuer's is the CA signing for itself. Compared by key, not by the
	// whole certificate: a responder may embed another issuance of its CA certificate (a
	// cross-signed or reissued intermediate, same subject and key).
	if embedded == nil || bytes.Equal(embedded.RawSubjectPublicKeyInfo, issuer.RawSubjectPublicKeyInfo) {
		return issuer, nil
	}
	// "Issued directly by the CA" (RFC 6960 4.2.2.2): named by the issuer as its issuer and
	// signed with its key. CheckSignatureFrom checks the signature (and that the issuer may
	// sign certificates), not the name.
	if !bytes.Equal(embedded.RawIssuer, issuer.RawSubject) || embedded.CheckSignatureFrom(issuer) != nil {
		return nil, fmt.Errorf("%w: signed by %s, which is neither the issuer (%s) nor a delegated OCSP signer it issued",
			ErrOCSPSigner, embedded.Subject, issuer.Subject)
	}
	if !slices.Contains(embedded.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
		return nil, fmt.Errorf("%w: signed by %s, which the issuer issued without the OCSP Signing extended key usage",
			ErrOCSPSigner, embedded.Subject)
	}
	return embedded, nil
}
