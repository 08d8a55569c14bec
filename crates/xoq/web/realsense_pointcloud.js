import{b as le,c as se,d as ue,f as de}from"./chunks/chunk-2GTEP4EW.js";import{a as G}from"./chunks/chunk-WQQR7UH7.js";import"./chunks/chunk-WHQEL2IU.js";import{C as re,D as ie,E as ae,a as z,b as O,c as k,d as j,e as W,f as P,g as M,h as L,j as Y,k as X,l as J,m as I,o as A,p as Q,q as Z,r as ee,s as te,w as ne,z as oe}from"./chunks/chunk-YPLDYOQC.js";import{aa as q,ba as _,ia as N}from"./chunks/chunk-3LXHP74P.js";import"./chunks/chunk-L72EZ7PG.js";var C=window.xoqState;Object.assign(C,{frames:0,points:0,lastSeq:null,colorBy:"depth",glErrors:0});var Ce=document.getElementById("stats"),U=document.getElementById("view"),S=document.getElementById("color-by"),ce=document.getElementById("point-size"),y=new ie({antialias:!1,preserveDrawingBuffer:!0});y.setPixelRatio(window.devicePixelRatio);U.appendChild(y.domElement);var me=y.getContext(),f=new X;f.background=new Y(855570);var g=new oe(50,1,.02,50);g.up.set(0,-1,0);g.position.set(1.1,-1,-1);var K=new ae(g,y.domElement);K.target.set(0,.15,1.7);K.update();var Re=`
uniform usampler2D uDepth;
uniform sampler2D uColor;
uniform vec4 uDepthK;     // fx, fy, ppx, ppy of the depth picture
uniform vec4 uColorK;     // the same for the colour picture
uniform vec2 uColorSize;  // the size the colour intrinsics are for
uniform float uScale;     // metres per depth unit
uniform vec2 uRange;      // colour map: near, far (m)
uniform int uColorBy;     // 0: distance, 1: colour picture
uniform float uPointPx;   // pixels per metre at 1 m in the view
uniform float uSize;      // point size in depth pixels
out vec3 vColor;
${de}
void main() {
  ivec2 px = ivec2(position.xy);
  uint d = texelFetch(uDepth, px, 0).r;
  if (d == 0u) {
    // No measurement: outside the clip volume, so nothing is drawn.
    gl_Position = vec4(2.0, 2.0, 2.0, 1.0);
    gl_PointSize = 0.0;
    vColor = vec3(0.0);
    return;
  }
  float z = float(d) * uScale;
  vec3 p = vec3((position.x - uDepthK.z) / uDepthK.x * z, (position.y - uDepthK.w) / uDepthK.y * z, z);
  vec4 mv = modelViewMatrix * vec4(p, 1.0);
  gl_Position = projectionMatrix * mv;
  // A pixel's footprint at its distance, as seen from the view (at least one screen pixel).
  gl_PointSize = clamp(uSize * (z / uDepthK.x) * uPointPx / max(-mv.z, 0.01), 1.0, 16.0);
  if (uColorBy == 1) {
    vec2 c = vec2(p.x / z * uColorK.x + uColorK.z, p.y / z * uColorK.y + uColorK.w) / uColorSize;
    vColor = texture(uColor, c).rgb;
  } else {
    vColor = turbo((z - uRange.x) / (uRange.y - uRange.x));
  }
}`,Te=`
in vec3 vColor;
out vec4 fragColor;
void main() {
  fragColor = vec4(vColor, 1.0);
}`,fe=new A(new Uint8Array([128,128,128,255]),1,1);fe.needsUpdate=!0;var s={uDepth:{value:null},uColor:{value:fe},uDepthK:{value:new L(1,1,0,0)},uColorK:{value:new L(1,1,0,0)},uColorSize:{value:new P(1,1)},uScale:{value:.001},uRange:{value:new P(se,ue)},uColorBy:{value:0},uPointPx:{value:500},uSize:{value:1.5}},He=new ne({glslVersion:W,vertexShader:Re,fragmentShader:Te,uniforms:s}),h,l;function Fe(e,n){h&&(f.remove(h),h.geometry.dispose()),l?.dispose();let o=new Float32Array(e*n*3);for(let t=0,a=0;t<n;t++)for(let i=0;i<e;i++,a+=3)o[a]=i,o[a+1]=t;let r=new I;r.setAttribute("position",new J(o,3)),h=new ee(r,He),h.frustumCulled=!1,f.add(h),l=new A(new Uint16Array(e*n),e,n,j,k),l.internalFormat="R16UI",l.minFilter=z,l.magFilter=z,l.generateMipmaps=!1,l.unpackAlignment=2,l.flipY=!1,s.uDepth.value=l}var R;function Se(e){R&&(f.remove(R),R.geometry.dispose());let n=.4,o=(i,c)=>new M((i-e.ppx)/e.fx*n,(c-e.ppy)/e.fy*n,n),r=[o(0,0),o(e.width,0),o(e.width,e.height),o(0,e.height)],t=new M,a=[t,r[0],t,r[1],t,r[2],t,r[3],r[0],r[1],r[1],r[2],r[2],r[3],r[3],r[0]];R=new Z(new I().setFromPoints(a),new Q({color:8949928})),f.add(R)}f.add(new re(.15));var d=!0;K.addEventListener("change",()=>d=!0);var he=()=>{let e=U.clientWidth,n=Math.max(420,U.clientHeight);y.setSize(e,n,!1),g.aspect=e/n,g.updateProjectionMatrix(),s.uPointPx.value=n*y.getPixelRatio()/(2*Math.tan(g.fov*Math.PI/360)),d=!0};window.addEventListener("resize",he);he();var E,w=document.createElement("canvas"),be=w.getContext("2d"),m,Ee=0,B=new URLSearchParams(location.search).get("color")==="depth"?"depth":"picture";S.value=B;S.addEventListener("change",()=>ge(S.value));ce.addEventListener("input",()=>{s.uSize.value=Number(ce.value),d=!0});function ge(e){B=e,S.value=e,d=!0}var Be=45,De=4e4,x,ve,u,p=0,D=0,F=0,ye="",b=new N(30),V,H=!1,T,we=0,v=null;function $e(e){if(!e)return;let n=e.depth;s.uDepthK.value.set(n.fx,n.fy,n.ppx,n.ppy);let o=e.color;s.uColorK.value.set(o.fx,o.fy,o.ppx,o.ppy),s.uColorSize.value.set(o.width,o.height),s.uScale.value=e.scale,Se(n),d=!0}function pe(e){let{width:n,height:o,data:r}=e.image;(!l||l.image.width!==n||l.image.height!==o)&&Fe(n,o),l.image.data.set(r),l.needsUpdate=!0;let t=0;for(let a=0;a<r.length;a++)r[a]!==0&&t++;D=t,u=e,d=!0}function ze(e,n,o,r){let t=n.canvas;(w.width!==t.width||w.height!==t.height||!m)&&(w.width=t.width,w.height=t.height,m?.dispose(),m=new te(w),m.flipY=!1,m.minFilter=O,m.generateMipmaps=!1,s.uColor.value=m),be.drawImage(t,0,0),V=o,H=!0;let a=r+Math.round(o*1e3);e.decodeAt(a,De).then(i=>{let c=i??e.latest;if(!c){H=!1;return}v=Math.abs(c.timestampUs-a)/1e3,T=c})}function xe(){requestAnimationFrame(xe);let e=x,n=e?.info,o=E?.element.renderer.out.timestamp.peek(),r=e?.epochUs,t=B==="picture"&&n!==void 0&&o!==void 0&&r!==void 0;e&&(e.keepRecent=t?Be:0,e.decodeNewest=!t),s.uColorBy.value!==(t?1:0)&&(s.uColorBy.value=t?1:0,d=!0),C.colorBy=t?"picture":"depth";let a;if(t)T?(a=T,T=void 0,pe(a),m.needsUpdate=!0,Ee++,we++):!H&&o!==V&&e&&E&&ze(e,E,o,r);else{v=null,H=!1,T=void 0,V=void 0;let i=ve;i!==void 0&&i!==u&&n!==void 0&&(a=i,pe(i))}if(!(!d||!h)&&(d=!1,y.render(f,g),a)){if(H=!1,p++,b.push(Date.now()-a.timestampUs/1e3),p===1||p%30===0){let i=me.getError();i!==me.NO_ERROR&&(F++,ye=`0x${i.toString(16)}`)}Object.assign(C,{frames:p,points:D,lastSeq:a.seq,glErrors:F,syncMs:v,latencyMs:b.median()??null})}}async function Pe(){if(x=await le({needsInfo:!0,onCatalog:$e,onFrame(t){ve=t},okText:t=>`point cloud of "${t.name}" from ${t.cfg.relay}: drag to turn, scroll to zoom, right-drag to pan`}),!x)return;let e=x,n=document.getElementById("color");E=G(n,q(e.cfg),e.name),window.xoqCamera=E,window.addEventListener("pagehide",()=>E?.close()),requestAnimationFrame(xe);let o=0,r=performance.now();setInterval(()=>{let t=performance.now(),a=(p-o)*1e3/(t-r);o=p,r=t;let i=e.info?.depth,c=b.median(),$=E?.status();Ce.textContent=[`broadcast    ${e.name}`,`points       ${D.toLocaleString("en")} of ${u?(u.image.width*u.image.height).toLocaleString("en"):"\u2013"}`,`frames       ${p} drawn, ~${a.toFixed(0)}/s, ${e.skipped} skipped`,`frame        ${u?.seq??"\u2013"}, ${c===void 0?"\u2013":`${c.toFixed(0)} ms`} capture \u2192 drawn`,`intrinsics   ${i?`${i.width}\xD7${i.height}, fx ${i.fx.toFixed(1)} fy ${i.fy.toFixed(1)}`:"\u2013 (waiting for the catalog)"}`,...i?[`             ppx ${i.ppx.toFixed(1)} ppy ${i.ppy.toFixed(1)} (${i.model})`]:[],`colour by    ${C.colorBy}${B==="picture"&&C.colorBy!=="picture"?" (no picture yet)":""}${v===null?"":v===0?", depth of the same capture":`, depth ${v.toFixed(0)} ms off`}`,`colour       ${$?`${$.link}, ${$.framesShown} frames shown`:"\u2013"}`,`WebGL        ${F?`${F} errors (last ${ye})`:"no errors"}`].join(`
`)},1e3)}window.xoqCloud={get frames(){return p},get points(){return D},get width(){return u?.image.width??null},get height(){return u?.image.height??null},get lastSeq(){return u?.seq??null},get scale(){return x?.info?.scale??null},get intrinsics(){return x?.info?.depth??null},get colorBy(){return C.colorBy},get colorFrames(){return Ee},get pairedFrames(){return we},get syncMs(){return v},get glErrors(){return F},get latencyMs(){return b.median()??null},setColorBy:ge,scene:f};Pe().catch(e=>{window.xoqState.kind!=="error"&&_(`error: ${e.message??e}`,"error")});
