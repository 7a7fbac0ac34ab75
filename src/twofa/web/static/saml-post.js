// Posts the SAML response to the service provider as soon as the page is read (HTTP-POST binding).
document.getElementById("saml-post").submit();
