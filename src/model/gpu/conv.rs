//! The U-Net's convolutions on cuDNN, all three passes (forward, backward-data,
//! backward-filter): descriptors and algorithms are chosen once per shape and precision
//! (cuDNN's heuristic) and kept, with one workspace grown to the largest need. candle's own
//! cuDNN path rebuilds all of that on every call and has no backward.

use super::Precision;
use crate::model::cpu::conv::ConvShape;
use candle_core::cuda::cudarc::cudnn::{
    sys, ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn,
    FilterDescriptor, TensorDescriptor,
};
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use candle_core::Result;
use std::collections::HashMap;
use std::sync::Arc;

fn cudnn_err(
    what: &str,
) -> impl FnOnce(candle_core::cuda::cudarc::cudnn::CudnnError) -> candle_core::Error + '_ {
    move |e| candle_core::Error::Msg(format!("cuDNN {what}: {e:?}"))
}

/// One convolution shape's descriptors and chosen algorithms.
struct Plan {
    x: TensorDescriptor<f32>,
    w: FilterDescriptor<f32>,
    y: TensorDescriptor<f32>,
    conv: ConvDescriptor<f32>,
    forward: sys::cudnnConvolutionFwdAlgo_t,
    backward_data: sys::cudnnConvolutionBwdDataAlgo_t,
    backward_filter: sys::cudnnConvolutionBwdFilterAlgo_t,
}

fn dims(values: [usize; 4]) -> Result<[i32; 4]> {
    let mut out = [0i32; 4];
    for (o, v) in out.iter_mut().zip(values) {
        *o = i32::try_from(v).map_err(candle_core::Error::wrap)?;
    }
    Ok(out)
}

impl Plan {
    fn new(cudnn: &Arc<Cudnn>, s: &ConvShape, precision: Precision) -> Result<Self> {
        let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        let x = cudnn
            .create_4d_tensor::<f32>(nchw, dims([s.batch, s.c_in, s.h, s.w])?)
            .map_err(cudnn_err("input descriptor"))?;
        let w = cudnn
            .create_4d_filter::<f32>(nchw, dims([s.c_out, s.c_in, s.k, s.k])?)
            .map_err(cudnn_err("filter descriptor"))?;
        let y = cudnn
            .create_4d_tensor::<f32>(nchw, dims([s.batch, s.c_out, s.h_out(), s.w_out()])?)
            .map_err(cudnn_err("output descriptor"))?;
        let pad = i32::try_from(s.pad).map_err(candle_core::Error::wrap)?;
        let mut conv = cudnn
            .create_conv2d::<f32>(
                [pad, pad],
                [1, 1],
                [1, 1],
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            )
            .map_err(cudnn_err("convolution descriptor"))?;
        conv.set_math_type(match precision {
            Precision::Tf32 => sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
            Precision::F32 => sys::cudnnMathType_t::CUDNN_FMA_MATH,
        })
        .map_err(cudnn_err("math type"))?;
        let forward = ConvForward {
            conv: &conv,
            x: &x,
            w: &w,
            y: &y,
        }
        .pick_algorithm()
        .map_err(cudnn_err("forward algorithm"))?;
        let backward_data = ConvBackwardData {
            conv: &conv,
            dx: &x,
            w: &w,
            dy: &y,
        }
        .pick_algorithm()
        .map_err(cudnn_err("backward-data algorithm"))?;
        let backward_filter = ConvBackwardFilter {
            conv: &conv,
            x: &x,
            dw: &w,
            dy: &y,
        }
        .pick_algorithm()
        .map_err(cudnn_err("backward-filter algorithm"))?;
        Ok(Self {
            x,
            w,
            y,
            conv,
            forward,
            backward_data,
            backward_filter,
        })
    }

    /// The largest workspace the three chosen algorithms need, in bytes.
    fn workspace_bytes(&self) -> Result<usize> {
        let f = ConvForward {
            conv: &self.conv,
            x: &self.x,
            w: &self.w,
            y: &self.y,
        }
        .get_workspace_size(self.forward)
        .map_err(cudnn_err("forward workspace"))?;
        let d = ConvBackwardData {
            conv: &self.conv,
            dx: &self.x,
            w: &self.w,
            dy: &self.y,
        }
        .get_workspace_size(self.backward_data)
        .map_err(cudnn_err("backward-data workspace"))?;
        let b = ConvBackwardFilter {
            conv: &self.conv,
            x: &self.x,
            dw: &self.w,
            dy: &self.y,
        }
        .get_workspace_size(self.backward_filter)
        .map_err(cudnn_err("backward-filter workspace"))?;
        Ok(f.max(d).max(b).max(1))
    }
}

/// A device's cuDNN handle, plans and workspace.
pub(crate) struct Convs {
    cudnn: Arc<Cudnn>,
    stream: Arc<CudaStream>,
    plans: HashMap<(ConvShape, Precision), Plan>,
    workspace: Option<CudaSlice<u8>>,
}

// SAFETY: cuDNN handles and descriptors may be used from any thread, one call at a time; a
// `Convs` lives behind its device's mutex (`CudaNet`), which serialises every use.
unsafe impl Send for Convs {}

impl Convs {
    pub(crate) fn new(stream: Arc<CudaStream>) -> Result<Self> {
        let cudnn = Cudnn::new(stream.clone()).map_err(|e| {
            candle_core::Error::Msg(format!(
                "cuDNN handle: {e:?} (cuDNN 9's engine libraries must sit beside libcudnn.so.9 on \
                 LD_LIBRARY_PATH: `bash scripts/ensure-cudnn.sh` prints that folder; or build with \
                 FEATURES=cuda to train on candle's own CUDA ops)"
            ))
        })?;
        Ok(Self {
            cudnn,
            stream,
            plans: HashMap::new(),
            workspace: None,
        })
    }

    /// The plan of `s` at the current precision and a workspace large enough for it.
    fn prepare(&mut self, s: &ConvShape) -> Result<(&Plan, &mut CudaSlice<u8>)> {
        let key = (*s, super::precision());
        if !self.plans.contains_key(&key) {
            let plan = Plan::new(&self.cudnn, s, key.1)?;
            let need = plan.workspace_bytes()?;
            if self.workspace.as_ref().is_none_or(|w| w.len() < need) {
                // SAFETY: cuDNN writes its workspace before reading it.
                let fresh = unsafe { self.stream.alloc::<u8>(need) };
                self.workspace = Some(fresh.map_err(candle_core::Error::wrap)?);
            }
            self.plans.insert(key, plan);
        }
        match (self.plans.get(&key), self.workspace.as_mut()) {
            (Some(plan), Some(ws)) => Ok((plan, ws)),
            _ => candle_core::bail!("cuDNN: no plan for {s:?}"),
        }
    }

    /// `y = conv(x, w)`.
    pub(crate) fn forward(
        &mut self,
        s: &ConvShape,
        x: &impl DevicePtr<f32>,
        w: &impl DevicePtr<f32>,
        y: &mut impl DevicePtrMut<f32>,
    ) -> Result<()> {
        let (p, ws) = self.prepare(s)?;
        let op = ConvForward {
            conv: &p.conv,
            x: &p.x,
            w: &p.w,
            y: &p.y,
        };
        // SAFETY: the buffers hold the descriptors' NCHW f32 elements (the caller's shape).
        unsafe { op.launch(p.forward, Some(ws), (1.0, 0.0), x, w, y) }
            .map_err(cudnn_err("convolution forward"))
    }

    /// `dx` from `dy` and `w`.
    pub(crate) fn backward_data(
        &mut self,
        s: &ConvShape,
        dy: &impl DevicePtr<f32>,
        w: &impl DevicePtr<f32>,
        dx: &mut impl DevicePtrMut<f32>,
    ) -> Result<()> {
        let (p, ws) = self.prepare(s)?;
        let op = ConvBackwardData {
            conv: &p.conv,
            dx: &p.x,
            w: &p.w,
            dy: &p.y,
        };
        // SAFETY: as in `forward`.
        unsafe { op.launch(p.backward_data, Some(ws), (1.0, 0.0), dx, w, dy) }
            .map_err(cudnn_err("convolution backward-data"))
    }

    /// `dw` from `x` and `dy`.
    pub(crate) fn backward_filter(
        &mut self,
        s: &ConvShape,
        x: &impl DevicePtr<f32>,
        dy: &impl DevicePtr<f32>,
        dw: &mut impl DevicePtrMut<f32>,
    ) -> Result<()> {
        let (p, ws) = self.prepare(s)?;
        let op = ConvBackwardFilter {
            conv: &p.conv,
            x: &p.x,
            dw: &p.w,
            dy: &p.y,
        };
        // SAFETY: as in `forward`.
        unsafe { op.launch(p.backward_filter, Some(ws), (1.0, 0.0), x, dw, dy) }
            .map_err(cudnn_err("convolution backward-filter"))
    }
}
