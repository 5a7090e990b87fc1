//! Certificates for [`StackOptions::tls`].

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A CA made for one stack, and a certificate with its key signed by it.
pub struct Pki {
    /// The CA's certificate (PEM).
    pub ca: String,
    /// The certificate (PEM), for `names`.
    pub cert: String,
    /// Its private key (PEM).
    pub key: String,
}

/// A new CA and a certificate for `names` (DNS names or IP addresses, which become
/// IP subject alternative names).
pub fn pki(names: &[&str]) -> anyhow::Result<Pki> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "keysync e2e CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut params = CertificateParams::new(names.clone())?;
    if let Some(name) = names.first() {
        params
            .distinguished_name
            .push(DnType::CommonName, name.as_str());
    }
    let cert = params.signed_by(&key, &ca)?;
    Ok(Pki {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}
